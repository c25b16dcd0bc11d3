"""Where conversations are kept: the contract (``base.Storage``) and the built-in SQLite backend."""

from voicebot.storage.base import Storage, StoredTurn

__all__ = ["Storage", "StoredTurn"]
