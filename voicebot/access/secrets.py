"""Where the server's signing secret comes from: the config, a file, or one generated once into
the data dir (so tokens survive a restart without an operator having to set anything)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from voicebot.config import AuthSettings, ConfigError

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 32


def load_signing_secret(auth: AuthSettings, data_dir: Path) -> bytes:
    if auth.secret is not None:
        value = auth.secret.get_secret_value()
        source = "auth.secret"
    elif auth.secret_file is not None:
        try:
            value = auth.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"auth.secret_file: cannot read {auth.secret_file}: {exc.strerror}") from None
        source = f"auth.secret_file ({auth.secret_file})"
    else:
        return _generated_secret(data_dir / "signing.secret")
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{source}: the signing secret must have at least {MIN_SECRET_CHARS} characters")
    return value.encode()


def _generated_secret(path: Path) -> bytes:
    if path.is_file():
        return path.read_text(encoding="utf-8").strip().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value)
    log.info("generated a session-token signing secret in %s (set auth.secret_file to share one across servers)", path)
    return value.encode()
