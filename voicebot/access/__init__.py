"""Who may talk to the bot and who may read what it stored: signed session tokens for the live
channels, API keys with scopes for the REST API, web origin allow-lists, tenants."""
