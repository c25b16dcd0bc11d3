"""The ``voicebot`` command: serve, chat, train, check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from voicebot.config import ConfigError, Settings, load_settings


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

    settings = _settings(args)
    print(f"voicebot: serving {settings.domain.path} on http://{settings.server.host}:{settings.server.port}/", flush=True)
    serve(settings)
    return 0


async def _chat(settings: Settings, language: str | None) -> int:
    from voicebot.events import BotMessage, ErrorEvent
    from voicebot.runtime import BotRuntime

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
    from voicebot.dialogue.nlu import (
        domain_examples,
        evaluate,
        model_path,
        train_classifier,
    )
    from voicebot.pipelines.nlu.entities import EntityExtractor

    settings = _settings(args)
    folder = args.domain_folder or settings.domain.path
    domain, problems = load_domain(folder)
    assert domain is not None
    extractor = EntityExtractor(domain.spec)
    examples = domain_examples(domain, extractor)
    print(f"{len(examples)} examples, {len(domain.spec.intents)} intents, languages {', '.join(domain.languages)}")
    evaluation = evaluate(examples, settings=settings.nlu)
    print(f"held-out intent accuracy (25% stratified split), {settings.nlu.backend} vs plain TF-IDF + logistic regression:")
    print(evaluation.report())
    model = train_classifier(examples, settings.nlu)
    path = model_path(domain, settings.storage.data_dir / "models", settings.nlu)
    model.save(path)
    print(f"model trained on all examples and saved to {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from voicebot.dialogue.domain import load_domain

    _, problems = load_domain(args.domain_folder, strict=False)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{args.domain_folder}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


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
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="talk to the bot in the terminal (reads stdin lines when piped)")
    common(chat)
    chat.add_argument("--language", help="starting language, e.g. de or zh")
    chat.set_defaults(func=cmd_chat)

    train = sub.add_parser("train", help="train and evaluate the NLU of a domain")
    common(train)
    train.add_argument("domain_folder", type=Path, nargs="?", help="domain folder (default: configured domain)")
    train.set_defaults(func=cmd_train)

    check = sub.add_parser("check", help="validate a domain and list every problem with file and line")
    check.add_argument("domain_folder", type=Path)
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
