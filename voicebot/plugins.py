"""The built-in backends of every pluggable kind, by name, as import paths.

This is composition, not core: the registry (voicebot.core.registry) knows no backend, and a
backend module is imported only when a config section names it. An integrator's backend needs no
line here: ``backend = "package.module:Class"`` or an entry point in group ``voicebot.<kind>``.
"""

from __future__ import annotations

from functools import cache

from voicebot.core.registry import PluginKind, Registry

KINDS = (
    PluginKind("channel", {
        "websocket": "voicebot.channels.websocket.channel:WebsocketChatChannel",
        "webrtc": "voicebot.channels.webrtc.channel:WebRTCChannel",
    }, required=("routes", "name")),
    PluginKind("storage", {
        "sqlite": "voicebot.storage.sqlite:SqliteStorage",
    }, required=("open", "close", "create_conversation", "save_turn", "resume")),
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
    }, required=("fit", "rank", "rank_many", "save", "load")),
    PluginKind("generator", {
        "seq2seq": "voicebot.pipelines.generation.seq2seq:Seq2SeqGenerator",
    }, required=("generate", "close")),
)


@cache
def default_registry() -> Registry:
    return Registry(KINDS)
