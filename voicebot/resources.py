"""Where bundled data lives, for both an editable install and a built wheel.

A wheel carries locales/ and the demo domain inside the package (voicebot/locales,
voicebot/examples/demo); an editable install reads them from the repository's top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _bundled(inside_package: str, in_repository: str) -> Path:
    packaged = _PACKAGE / inside_package
    return packaged if packaged.is_dir() else _PACKAGE.parent / in_repository


def locales_dir() -> Path:
    return _bundled("locales", "locales")


def demo_domain_dir() -> Path:
    return _bundled("examples/demo", "examples/demo")


def web_dir() -> Path:
    return _PACKAGE / "web"
