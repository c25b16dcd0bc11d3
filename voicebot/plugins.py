"""The built-in backends of every pluggable kind, by name, as import paths.

This is composition, not core: the registry (voicebot.core.registry) knows no backend, and a
backend module is imported only when a config section names it. An integrator's backend needs no
line here: ``backend = "package.module:Class"`` or an entry point in group ``voicebot.<kind>``.
"""

from __future__ import annotations

from functools import cache

from voicebot.config import Settings
from voicebot.core.registry import PluginKind, Registry
from voicebot.storage.base import STORAGE_METHODS

KINDS = (
    PluginKind("channel", {
        "websocket": "voicebot.channels.websocket.channel:WebsocketChatChannel",
        "webrtc": "voicebot.channels.webrtc.channel:WebRTCChannel",
    }, required=("routes", "name")),
    PluginKind("storage", {
        "sqlite": "voicebot.storage.sqlite:SqliteStorage",
        "postgres": "voicebot.storage.postgres:PostgresStorage",
    }, required=STORAGE_METHODS),  # every method of the contract, voicebot/storage/base.py
    PluginKind("asr", {
        "faster-whisper": "voicebot.pipelines.asr.faster_whisper_backend:FasterWhisperRecognizer",
        "openai-whisper": "voicebot.pipelines.asr.openai_whisper_backend:OpenAIWhisperRecognizer",
    }, required=("transcribe", "close")),
    PluginKind("tts", {
        "router": "voicebot.pipelines.tts.router:VoiceRouter",
        "piper": "voicebot.pipelines.tts.piper_backend:PiperSynthesizer",
        "espeak": "voicebot.pipelines.tts.espeak_backend:EspeakSynthesizer",
        "coqui": "voicebot.pipelines.tts.coqui_backend:CoquiSynthesizer",
    }, required=("synthesize", "sample_rate", "supports", "close")),
    PluginKind("vad", {
        "silero": "voicebot.pipelines.vad.silero:SileroModel",
    }, required=("stream",)),
    PluginKind("nlu", {
        "charngram": "voicebot.pipelines.nlu.charngram:CharNgramIntentClassifier",
        "embedding": "voicebot.pipelines.nlu.embedding:EmbeddingIntentClassifier",
        "encoder": "voicebot.pipelines.nlu.encoder:EncoderIntentClassifier",
    }, required=("fit", "rank", "rank_many", "save", "load")),
    PluginKind("generator", {
        "seq2seq": "voicebot.pipelines.generation.seq2seq:Seq2SeqGenerator",
    }, required=("generate", "close")),
)


@cache
def default_registry() -> Registry:
    return Registry(KINDS)


def check_settings(settings: Settings, registry: Registry | None = None) -> None:
    """Fail at start, naming the setting, when a section names a backend that cannot be found or
    gives it options it does not take. Voice kinds are checked only when a channel needs voice
    (a chat-only install need not have their packages)."""
    registry = registry or default_registry()
    sections: list[tuple[str, str, dict[str, object]]] = [
        ("storage", settings.storage.backend, settings.storage.backend_options()),
        ("nlu", settings.nlu.backend, settings.nlu.backend_options()),
    ]
    if settings.generation.backend != "none":
        sections.append(("generator", settings.generation.backend, settings.generation.backend_options()))
    channels = [registry.resolve("channel", name, "server.channels") for name in settings.server.channels]
    if any(getattr(cls, "needs_voice", False) for cls in channels):
        sections += [(kind, getattr(settings, kind).backend, getattr(settings, kind).backend_options()) for kind in ("asr", "tts", "vad")]
    for cls in channels:
        registry.options(cls, settings.channels.get(cls.name, {}), f"channels.{cls.name}")
    for kind, backend, options in sections:
        setting = "generation" if kind == "generator" else kind
        cls = registry.resolve(kind, backend, f"{setting}.backend")
        registry.options(cls, options, setting)
