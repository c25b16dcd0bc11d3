"""The ``voicebot`` command: serve, chat, train, check, export-dataset, train generator, rotate-keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from voicebot.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from voicebot.storage.base import Storage


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        server__host=getattr(args, "host", None),
        server__port=getattr(args, "port", None),
        storage__data_dir=getattr(args, "data_dir", None),
        domain__path=getattr(args, "domain", None),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from voicebot.server import serve
    from voicebot.workers import check_workers

    settings = _settings(args)
    check_workers(settings, args.workers)  # N > 1 needs a shared storage and Redis: refused with the reason otherwise
    _check_stored_keys(settings)
    workers = f" with {args.workers} workers" if args.workers > 1 else ""
    print(f"voicebot: serving {settings.domain.path} on http://{settings.server.host}:{settings.server.port}/{workers}", flush=True)
    serve(settings, args.workers)
    return 0


async def _chat(settings: Settings, language: str | None) -> int:
    from voicebot.core.events import BotMessage, ErrorEvent
    from voicebot.core.runtime import BotRuntime

    runtime = BotRuntime(settings)
    await runtime.start()
    interactive = sys.stdin.isatty()
    try:
        handle = await runtime.open_session("terminal", language=language)
        print(f"bot: {runtime.welcome(handle)['text']}", flush=True)
        events = handle.events().__aiter__()
        while True:
            if interactive:
                print("you: ", end="", flush=True)
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if not interactive:
                print(f"you: {text}", flush=True)
            await handle.send_text(text)
            while True:
                event = await events.__anext__()
                if isinstance(event, BotMessage):
                    print(f"bot: {event.text}", flush=True)
                    break
                if isinstance(event, ErrorEvent):
                    print(f"bot (error {event.code}): {event.message}", flush=True)
                    break
        await handle.close()
    finally:
        await runtime.close()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(_settings(args), args.language))


def cmd_train(args: argparse.Namespace) -> int:
    from voicebot.dialogue.domain import load_domain
    from voicebot.dialogue.nlu import domain_examples, model_path, train_classifier
    from voicebot.learning.nlu_report import compare_held_out, side_by_side
    from voicebot.pipelines.nlu.entities import EntityExtractor

    settings = _settings(args)
    folder = args.domain_folder or settings.domain.path
    domain, problems = load_domain(folder)
    assert domain is not None
    extractor = EntityExtractor(domain.spec)
    examples = domain_examples(domain, extractor)
    print(f"{len(examples)} examples, {len(domain.spec.intents)} intents, languages {', '.join(domain.languages)}")
    evaluation, reports = compare_held_out(examples, settings.nlu)
    print(f"held-out intent accuracy (25% stratified split), {settings.nlu.backend} vs plain TF-IDF + logistic regression:")
    print(evaluation.report())
    print(f"on the same split, {settings.nlu.backend} vs the n-gram model alone (out of scope as the engine decides it):")
    print(side_by_side(reports))
    model = train_classifier(examples, settings.nlu)
    path = model_path(domain, settings.storage.data_dir / "models", settings.nlu)
    model.save(path)
    print(f"model trained on all examples and saved to {path}")
    return 0


def cmd_test_nlu(args: argparse.Namespace) -> int:
    from voicebot.learning.nlu_cli import run_test_nlu

    return run_test_nlu(_settings(args), args.domain_folder, args.file, args.json)


def cmd_check(args: argparse.Namespace) -> int:
    from voicebot.dialogue.domain import load_domain

    _, problems = load_domain(args.domain_folder, strict=False)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{args.domain_folder}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def cmd_export_dataset(args: argparse.Namespace) -> int:
    from voicebot.learning.export import ExportOptions, ExportReport, export_dataset

    settings = _settings(args)
    try:
        patterns = dict(_pattern_option(text) for text in args.redact_pattern or [])
    except ValueError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    options = ExportOptions(min_turn_rating=args.min_turn_rating, include_unrated=args.include_unrated, extra_patterns=patterns,
                            stored_pattern_names=tuple(name for named in settings.privacy.extra_patterns.values() for name in named))

    async def export() -> ExportReport:
        async with _opened(_tool_storage(settings)) as storage:
            return await export_dataset(storage, args.out, options)

    try:
        report = asyncio.run(export())
    except FileNotFoundError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    print(report.summary(args.out))
    return 0


def _tool_storage(settings: Settings) -> Storage:
    """The configured storage backend with the server's keys, for a command that reads or
    rewrites what the server stored (no key file is created for it)."""
    from voicebot.plugins import default_registry
    from voicebot.privacy.sealing import Sealer

    sealer = Sealer.from_settings(settings.privacy, settings.storage.data_dir, create_key=False)
    return default_registry().create("storage", settings.storage.backend, settings.storage.backend_options(), "storage",
                                     data_dir=settings.storage.data_dir, sealer=sealer)


@contextlib.asynccontextmanager
async def _opened(storage: Storage) -> AsyncIterator[Storage]:
    """Open what is stored, without creating a store where none is (FileNotFoundError): opening
    checks that the keys read it before anything is read or rewritten."""
    try:
        await storage.open(create=False)
        yield storage
    finally:
        await storage.close()


def _check_stored_keys(settings: Settings) -> None:
    """Before serving: the configured keys must read the stored conversations (a ConfigError
    naming the setting otherwise, instead of a traceback from inside the server's start-up)."""

    async def check() -> None:
        with contextlib.suppress(FileNotFoundError):  # nothing stored yet: nothing to read
            async with _opened(_tool_storage(settings)):
                pass

    asyncio.run(check())


async def _rotate_keys(settings: Settings) -> int:
    storage = _tool_storage(settings)
    cipher = storage.sealer.cipher
    if not cipher.has_keys:
        await storage.close()
        print(f"voicebot: no encryption key configured ({cipher.source})", file=sys.stderr)
        return 2
    try:
        async with _opened(storage):
            counts = await storage.rotate_encryption(actor="cli")
    except FileNotFoundError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    print(f"re-encrypted {counts['reencrypted']} value(s) under the newest key, encrypted {counts['encrypted']} unencrypted value(s), "
          f"{counts['current']} already under the newest key ({cipher.source}).\n"
          "Every stored value is now under the first key: the others can be removed from the configuration.")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    return asyncio.run(_rotate_keys(_settings(args)))


def _pattern_option(text: str) -> tuple[str, str]:
    import re

    name, sep, pattern = text.partition("=")
    if not sep or not name or not pattern:
        raise ValueError(f"--redact-pattern takes NAME=REGEX, not {text!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--redact-pattern {name}: not a regular expression: {exc}") from None
    return name, pattern


def cmd_train_generator(args: argparse.Namespace) -> int:
    from voicebot.learning.finetune import TrainingDataError, train_generator

    try:
        train_generator(args.data, args.base, args.out, steps=args.steps, learning_rate=args.learning_rate, batch_size=args.batch_size,
                        max_input_tokens=args.max_input_tokens, max_target_tokens=args.max_target_tokens, seed=args.seed)
    except (TrainingDataError, FileExistsError, OSError, ValueError) as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    return 0


def _route_subcommand_words(argv: list[str]) -> list[str]:
    """``voicebot train generator ...`` -> ``voicebot train-generator ...``: ``train``'s optional
    positional (a domain folder) cannot also be a sub-command, so the word is routed before
    parsing. A domain folder that is really named ``generator`` is still reachable as ``./generator``."""
    index = next((i for i, word in enumerate(argv) if not word.startswith("-")), None)
    if index is not None and argv[index:index + 2] == ["train", "generator"]:
        return [*argv[:index], "train-generator", *argv[index + 2:]]
    return argv


def _add_learning_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = sub.add_parser("export-dataset", help="stored conversations -> a redacted JSONL training set for the generator")
    export.add_argument("--config", type=Path, help="TOML or YAML settings file")
    export.add_argument("--data-dir", type=Path, help="where conversations are stored")
    export.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    export.add_argument("--min-turn-rating", type=int, choices=(-1, 0, 1), default=0,
                        help="leave out rated turns below this (default 0: thumbs-down turns are left out)")
    unrated = export.add_mutually_exclusive_group()
    unrated.add_argument("--include-unrated", dest="include_unrated", action="store_true", default=True,
                         help="export turns nobody rated too (default)")
    unrated.add_argument("--rated-only", dest="include_unrated", action="store_false", help="export rated turns only")
    export.add_argument("--redact-pattern", action="append", metavar="NAME=REGEX",
                        help=r"also replace matches of REGEX with <NAME> (repeatable), e.g. customer_id='CN-\d{8}'")
    export.set_defaults(func=cmd_export_dataset)

    generator = sub.add_parser("train-generator", prog="voicebot train generator",
                               help="fine-tune the response generator on an exported dataset (also: voicebot train generator)")
    generator.add_argument("--data", type=Path, required=True, help="JSONL from voicebot export-dataset")
    generator.add_argument("--base", required=True, help="seq2seq model folder or Hugging Face id to start from")
    generator.add_argument("--out", type=Path, required=True, help="folder to write the fine-tuned model and tokenizer to")
    generator.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    generator.add_argument("--learning-rate", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    generator.add_argument("--batch-size", type=int, default=8, help="examples per step (default 8)")
    generator.add_argument("--max-input-tokens", type=int, default=512, help=argparse.SUPPRESS)
    generator.add_argument("--max-target-tokens", type=int, default=128, help=argparse.SUPPRESS)
    generator.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    generator.set_defaults(func=cmd_train_generator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicebot", description="Multilingual customer-service bot")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML or YAML settings file")
        p.add_argument("--data-dir", type=Path, help="where conversations and models are stored")
        p.add_argument("--domain", type=Path, help="domain folder (default: the bundled demo)")

    serve = sub.add_parser("serve", help="run the server (chat page, websocket, REST API)")
    common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="serving processes on this port (default 1); more than 1 needs "
                       "PostgreSQL storage and [coordination] redis_url (docs/deploy.md)")
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="talk to the bot in the terminal (reads stdin lines when piped)")
    common(chat)
    chat.add_argument("--language", help="starting language, e.g. de or zh")
    chat.set_defaults(func=cmd_chat)

    train = sub.add_parser("train", help="train and evaluate the NLU of a domain")
    common(train)
    train.add_argument("domain_folder", type=Path, nargs="?", help="domain folder (default: configured domain)")
    train.set_defaults(func=cmd_train)

    test_nlu = sub.add_parser("test-nlu", help="score the NLU of a domain on a labelled CSV (text,intent[,language]) or YAML file")
    test_nlu.add_argument("--config", type=Path, help="TOML or YAML settings file")
    test_nlu.add_argument("--data-dir", type=Path, help="where trained models are stored")
    test_nlu.add_argument("domain_folder", type=Path)
    test_nlu.add_argument("file", type=Path)
    test_nlu.add_argument("--json", action="store_true", help="print the report as JSON")
    test_nlu.set_defaults(func=cmd_test_nlu)

    check = sub.add_parser("check", help="validate a domain and list every problem with file and line")
    check.add_argument("domain_folder", type=Path)
    check.set_defaults(func=cmd_check)

    rotate = sub.add_parser("rotate-keys", help="re-encrypt every stored conversation with the newest key (privacy.encryption_keys, "
                                                "newest first), so older keys can be retired")
    common(rotate)
    rotate.set_defaults(func=cmd_rotate_keys)

    _add_learning_commands(sub)
    from voicebot.learning import insights_cli

    insights_cli.add_command(sub, common)
    _add_models_command(sub)
    _add_call_command(sub)
    from voicebot.coordination import control_cli

    control_cli.add_command(sub, _settings)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    import json

    from voicebot.voice.models import available_models, format_models_table

    models = available_models(args.cache_dir)
    print(json.dumps(models, indent=2) if args.json else format_models_table(models))
    return 0


def _add_models_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = sub.add_parser("models", help="list the offline models (ASR, TTS, VAD) this machine has and where they come from")
    models.add_argument("--cache-dir", type=Path, help="assembled-model cache (default $VOICEBOT_MODEL_CACHE or ~/.cache/voicebot/models)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=cmd_models)


def cmd_call(args: argparse.Namespace) -> int:
    from voicebot.channels.webrtc.caller import call_once

    result = asyncio.run(call_once(args.url, args.wav, args.out, args.language, timeout=args.timeout, loopback_only=args.loopback,
                                   api_key=os.environ.get("VOICEBOT_API_KEY")))
    for text in result["you"]:
        print(f"you: {text}")
    for text in result["bot"]:
        print(f"bot ({result['language']}): {text}")
    latency = result["voice_to_voice_s"]
    print("voice-to-voice latency: " + (f"{latency:.3f} s" if latency is not None else "no bot audio heard"))
    if args.out:
        print(f"the bot's audio is in {args.out}")
    return 0


def _add_call_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    call = sub.add_parser("call", help="call a running bot over WebRTC: speak a WAV, record the answer, print transcripts and latency")
    call.add_argument("url", help="the bot's base URL, e.g. http://127.0.0.1:8080")
    call.add_argument("--wav", type=Path, required=True, help="what to say (any rate, mono or stereo)")
    call.add_argument("--out", type=Path, help="write the bot's answer here (16 kHz WAV)")
    call.add_argument("--language", help="the call's starting language, e.g. de")
    call.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    call.add_argument("--loopback", action="store_true", help="offer only 127.0.0.1 ICE candidates (bot on this machine)")
    call.epilog = "A bot that issues no anonymous session tokens needs an API key with scope sessions:issue in VOICEBOT_API_KEY."
    call.set_defaults(func=cmd_call)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_route_subcommand_words(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from voicebot.dialogue.domain import DomainError

        if isinstance(exc, DomainError):
            print(f"voicebot: the domain has errors (run 'voicebot check'):\n{exc}", file=sys.stderr)
            return 2
        raise
