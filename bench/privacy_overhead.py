"""What privacy costs per turn: redaction, encryption + decryption, and a stored turn end to end.

Prints microseconds per turn (p50 / p95) for:

- redaction of a turn (user text, bot text and every string of its trace, ``Sealer.seal_turn``
  with encryption off), for a turn without personal data and one with an e-mail, a phone
  number, a card and an IBAN;
- encryption + decryption of what a turn stores (user text, bot text, trace JSON, dialogue state),
  with ``cryptography``'s Fernet;
- ``SqliteStorage.save_turn`` (a real SQLite file in WAL mode, one turn at a time, awaited) with privacy
  off, and with redaction + encryption on (the defaults), and reading the conversation back.

The trace has the structure and size of the engine's (``DialogueEngine.respond``): intent top-3,
entities, state, knowledge, prompt fields with history. It only measures, never passes or fails.

    .venv/bin/python bench/privacy_overhead.py
    .venv/bin/python bench/privacy_overhead.py --turns 3000 --stored 800 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.fernet import Fernet

from voicebot.config import PrivacySettings
from voicebot.core.session import DialogueState, HistoryEntry, SlotValue
from voicebot.privacy.sealing import Sealer
from voicebot.storage import StoredTurn
from voicebot.storage.sqlite import SqliteStorage

PLAIN = ("Hi, where is my order 12345? It was supposed to arrive on 2026-12-03.",
         "Order 12345 (Redmi Note 13) has shipped and should arrive on 2026-12-03. The total was 189.90 EUR.")
WITH_PII = ("I forgot my password, my email is maria.garcia@example.com, call me on +49 151 2345 6789; "
            "refund card 4111 1111 1111 1111 or IBAN DE89 3704 0044 0532 0130 00 for order 12345",
            "I've sent a password reset link to maria.garcia@example.com. It is valid for 30 minutes. "
            "If you don't see it, please check your spam folder.")


def engine_like_trace(user: str, bot: str, turn: int) -> dict[str, Any]:
    history = [[f"earlier question {i} about order 1234{i}", f"earlier answer {i}: shipped on 2026-11-2{i}"] for i in range(2)]
    return {
        "turn": turn,
        "language": {"chosen": "en", "switched": False, "reason": "kept", "langdetect": {"en": 0.99}, "domain": {"en": 0.91, "de": 0.04}},
        "intent": {"name": "login_problem", "confidence": 0.9312, "out_of_scope": False,
                   "top3": [{"intent": "login_problem", "score": 0.93}, {"intent": "order_status", "score": 0.04},
                            {"intent": "inform", "score": 0.01}]},
        "entities": [{"slot": "email", "type": "email", "value": "maria.garcia@example.com" if "@" in user else "12345",
                      "text": "maria.garcia@example.com" if "@" in user else "12345", "start": 34, "end": 58, "confidence": 0.99}],
        "state": {"update": {"filled": ["email"], "corrected": [], "flow_started": "password_reset"}, "active_flow": "password_reset",
                  "requested_slot": None, "awaiting_confirmation": None,
                  "slots": {"email": {"value": "maria.garcia@example.com", "confidence": 0.99, "turn": turn, "source_text": user}},
                  "failed_turns": 0, "handed_off": False},
        "sentiment": {"score": 0.0, "trend": 0.0, "negative": [], "positive": []},
        "knowledge": None,
        "action": {"name": "send_password_reset", "result": "sent", "ms": 0.4},
        "response": {"path": "action", "key": "send_password_reset_sent", "reason": "flow complete", "language": "en", "generator": None,
                     "note": "no generator configured: grounded template answer", "facts": {"email": "maria.garcia@example.com"},
                     "prompt_fields": {"language": "en", "intent": "login_problem", "user": user, "facts": {"email": "maria.garcia@example.com"},
                                       "knowledge": None, "template": bot, "history": history}},
        "models": {"nlu": "charngram-logreg", "nlu_model_file": "models/demo-charngram.joblib",
                   "language": "langdetect (seeded) + domain char n-gram", "knowledge": "tf-idf char n-gram", "generator": None},
        "timings_ms": {"language": 0.8, "nlu": 2.1, "dialogue": 1.3, "generation": 0.0, "response": 0.1},
    }


def state_for(user: str, bot: str) -> dict[str, Any]:
    state = DialogueState(language="en", active_flow="password_reset", turn_count=3)
    state.slots["email"] = SlotValue("maria.garcia@example.com", 0.99, 3, user)
    state.history = [HistoryEntry(user, bot, "login_problem", "en") for _ in range(3)]
    return state.to_dict()


def timed(function: Callable[[], Any], repeat: int) -> np.ndarray:
    for _ in range(min(50, repeat)):  # warm caches (compiled patterns, OpenSSL contexts)
        function()
    samples = np.empty(repeat)
    for index in range(repeat):
        started = time.perf_counter()
        function()
        samples[index] = time.perf_counter() - started
    return samples * 1e6


def figures(samples: np.ndarray) -> dict[str, float]:
    return {"p50_us": round(float(np.percentile(samples, 50)), 1), "p95_us": round(float(np.percentile(samples, 95)), 1),
            "mean_us": round(float(samples.mean()), 1)}


def bench_redaction(repeat: int) -> dict[str, Any]:
    sealer = Sealer.from_settings(PrivacySettings(encrypt_at_rest=False), Path("/nonexistent"), create_key=False)
    results = {}
    for name, (user, bot) in (("turn without PII", PLAIN), ("turn with e-mail, phone, card, IBAN", WITH_PII)):
        trace = engine_like_trace(user, bot, 3)
        results[name] = figures(timed(lambda u=user, b=bot, t=trace: sealer.seal_turn(u, b, t, "en"), repeat))
        results[name]["trace_json_bytes"] = len(json.dumps(trace, ensure_ascii=False))
    return results


def bench_encryption(repeat: int) -> dict[str, Any]:
    sealer = Sealer.from_settings(PrivacySettings(encryption_keys=[Fernet.generate_key().decode()], redact_stored=False),
                                  Path("/nonexistent"), create_key=False)
    user, bot = WITH_PII
    trace_json = json.dumps(engine_like_trace(user, bot, 3), ensure_ascii=False)
    state_json = json.dumps(state_for(user, bot), ensure_ascii=False)
    values = [user, bot, trace_json, state_json]
    cipher = sealer.cipher

    def round_trip() -> None:
        for value in values:
            cipher.decrypt(cipher.encrypt(value))

    sealed = [cipher.encrypt(value) for value in values]
    return {"encrypt + decrypt (user, bot, trace, state)": {**figures(timed(round_trip, repeat)),
                                                           "plaintext_bytes": sum(len(v.encode()) for v in values),
                                                           "stored_bytes": sum(len(v) for v in sealed)}}


async def bench_storage(turns: int) -> dict[str, Any]:
    """Both modes write alternately, turn by turn, so a busy machine disturbs them alike."""
    user, bot = WITH_PII
    state = DialogueState.from_dict(state_for(user, bot))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        modes = {
            "privacy off": None,
            "redaction + encryption (defaults)": Sealer.from_settings(
                PrivacySettings(encryption_keys=[Fernet.generate_key().decode()]), Path(folder), create_key=False),
        }
        storages = {}
        for number, (name, sealer) in enumerate(modes.items()):
            storages[name] = SqliteStorage(Path(folder) / f"{number}.sqlite", sealer)
            await storages[name].open()
            await storages[name].create_conversation("c", "token", "websocket", "en", "customer", state)
        writes = {name: np.empty(turns) for name in modes}
        for index in range(turns):
            turn = StoredTurn("c", index + 1, f"t{index}", user, bot, "en", "login_problem", "action", engine_like_trace(user, bot, index + 1))
            for name, storage in storages.items():
                started = time.perf_counter()
                await storage.save_turn(turn, state, "active")
                writes[name][index] = time.perf_counter() - started
        reads = {name: np.empty(20) for name in modes}
        for index in range(20):
            for name, storage in storages.items():
                started = time.perf_counter()
                await storage.get_conversation("c")
                reads[name][index] = time.perf_counter() - started
        for name, storage in storages.items():
            await storage.close()
            results[name] = {"save_turn": figures(writes[name][min(20, turns // 10):] * 1e6),
                             f"read conversation of {turns} turns, per turn": figures(reads[name] * 1e6 / turns)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2000, help="repetitions of the in-memory measurements")
    parser.add_argument("--stored", type=int, default=500, help="turns stored per mode in the SQLite measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = {
        "redaction per turn": bench_redaction(args.turns),
        "encryption per turn": bench_encryption(args.turns),
        "stored turn end to end": asyncio.run(bench_storage(args.stored)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for section, rows in report.items():
        print(section)
        for name, values in rows.items():
            if all(isinstance(v, dict) for v in values.values()):
                for sub, numbers in values.items():
                    print(f"  {name:<36} {sub:<44} " + "  ".join(f"{k} {v}" for k, v in numbers.items()))
            else:
                print(f"  {name:<81} " + "  ".join(f"{k} {v}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
