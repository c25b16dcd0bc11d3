"""The dialogue engine: domain data, NLU glue, state tracking, policy, knowledge base, actions."""
