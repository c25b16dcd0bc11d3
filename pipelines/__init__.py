"""Stage implementations, one folder per stage family, one module per backend (voicebot.pipelines)."""
