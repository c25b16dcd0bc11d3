"""Where bundled data lives, for both an editable install and a built wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(package: str, repo_relative: str) -> Path:
    try:
        path = Path(str(resources.files(package)))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / repo_relative


def locales_dir() -> Path:
    return _package_dir("voicebot.locales", "locales")


def demo_domain_dir() -> Path:
    return _package_dir("voicebot.examples.demo", "examples/demo")


def web_dir() -> Path:
    return Path(__file__).resolve().parent / "web"
