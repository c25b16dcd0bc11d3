"""Intent classification and entity extraction."""
