"""Privacy helpers: personal data removed from text before it leaves the conversation store."""

from voicebot.privacy.redaction import Finding, redact, redact_many

__all__ = ["Finding", "redact", "redact_many"]
