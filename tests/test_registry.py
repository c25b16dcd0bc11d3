"""The plug-in registry: every kind is found the same way, and the core depends on no backend."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from voicebot.core.registry import PluginError
from voicebot.plugins import KINDS, default_registry

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_imports_nothing_from_pipelines_or_channels() -> None:
    offending = []
    for path in sorted((ROOT / "voicebot" / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending += [f"{path.name}: {name}" for name in names if name.startswith(("voicebot.pipelines", "voicebot.channels"))]
    assert offending == []


def test_every_kind_has_its_builtins_importable_and_meeting_the_contract() -> None:
    registry = default_registry()
    assert {kind.name for kind in KINDS} == {"channel", "storage", "asr", "tts", "vad", "nlu", "generator"}
    for kind in KINDS:
        for name in kind.builtins:
            cls = registry.resolve(kind.name, name, f"{kind.name}.backend")
            assert all(hasattr(cls, method) for method in kind.required), (kind.name, name)


def test_a_module_class_path_and_an_entry_point_resolve_like_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_voice"
    package.mkdir()
    (package / "__init__.py").write_text(
        "class Quiet:\n"
        "    name = 'quiet'\n"
        "    def stream(self):\n"
        "        return self\n"
        "    def probability(self, frame):\n"
        "        return 0.0\n")
    dist = tmp_path / "acme_voice-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-voice\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[voicebot.vad]\nquiet = acme_voice:Quiet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    by_path = registry.create("vad", "acme_voice:Quiet", {}, "vad")
    by_entry_point = registry.create("vad", "quiet", {}, "vad")
    assert type(by_path).__name__ == type(by_entry_point).__name__ == "Quiet"
    with pytest.raises(PluginError, match=r"vad\.loud: unknown setting"):
        registry.create("vad", "quiet", {"loud": True}, "vad")  # no Options: no keys accepted
    sys.modules.pop("acme_voice", None)


@pytest.mark.parametrize(
    ("kind", "backend", "message"),
    [
        ("asr", "whisper-9000", r"asr\.backend: unknown asr 'whisper-9000': use one of faster-whisper, openai-whisper"),
        ("tts", "no_such_module:Voice", r"tts\.backend: tts backend 'no_such_module:Voice': cannot import no_such_module"),
        ("storage", "voicebot.config:Settings", r"storage\.backend: storage backend 'voicebot.config:Settings' .* lacks open"),
    ],
)
def test_bad_backends_name_the_setting(kind: str, backend: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        default_registry().resolve(kind, backend, f"{kind}.backend")


async def test_a_registry_given_to_the_runtime_builds_every_part_it_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's registry, not the default one, serves the tenants' intent classifiers too."""
    from dataclasses import replace

    from voicebot.config import Settings
    from voicebot.core.registry import Registry
    from voicebot.core.runtime import BotRuntime

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    kinds = [replace(kind, builtins={"charngram": "centroid_nlu:CentroidIntentClassifier"}) if kind.name == "nlu" else kind
             for kind in KINDS]
    # The built-in name "charngram" is remapped, so the settings name it (the default is now "encoder").
    runtime = BotRuntime(Settings(storage={"data_dir": tmp_path}, nlu={"backend": "charngram"}), registry=Registry(kinds))
    await runtime.start()
    try:
        assert runtime.engine.classifier.name == "centroid-tfidf"
    finally:
        await runtime.close()
