"""Channel adapters (voicebot.channels): how connections become sessions and how replies leave."""
