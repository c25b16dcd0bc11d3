"""Learning from conversations, end to end with real components: a server generating with a
(tiny, random) seq2seq model, rated multilingual websocket conversations, `voicebot export-dataset`
on its database while it runs, `voicebot train generator` on the export, and the result hot-swapped
into the same server under a conversation that goes on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir

EMAIL = "maria.garcia@example.com"


def voicebot(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "voicebot", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generating_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, tiny_seq2seq: Path) -> Iterator[ServerProcess]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("learning"), trained_models)
    env = {"VOICEBOT_GENERATION__BACKEND": "seq2seq", "VOICEBOT_GENERATION__MODEL": str(tiny_seq2seq),
           "VOICEBOT_GENERATION__MAX_NEW_TOKENS": "24"}
    server = ServerProcess(data_dir, extra_env=env).start(timeout=180)
    yield server
    server.stop()


@dataclass
class Conversations:
    ids: list[str]
    answers: list[dict[str, Any]]  # every bot message, in order
    disliked: dict[str, Any]  # the answer rated -1
    liked: dict[str, Any]  # the answer rated 1


async def _hold_conversations(server: ServerProcess) -> Conversations:
    answers: list[dict[str, Any]] = []
    ids: list[str] = []
    scripts = [
        ("en", ["where is my order?", "12345", f"I forgot my password, my email is {EMAIL}"]),
        ("de", ["Wie lange habe ich Zeit für eine Rückgabe?", "Welche Zahlungsmethoden akzeptiert ihr?"]),
        ("zh-CN", ["退货政策是什么？", "我的订单24680到哪了"]),
    ]
    rated: dict[int, dict[str, Any]] = {}
    for language, lines in scripts:
        chat = await ChatClient.open(server.ws_url, language=language)
        ids.append(chat.session["session_id"])
        for line in lines:
            answer = await chat.say(line)
            answers.append(answer)
            if line == "12345":
                rated[-1] = answer
            if line.startswith("Welche"):
                rated[1] = answer
        for rating, answer in rated.items():
            if answer in answers[-len(lines):]:
                await chat.send({"type": "feedback", "turn_id": answer["turn_id"], "rating": rating})
                await chat.expect("feedback_saved")
        if language == "de":
            await chat.send({"type": "feedback", "rating": 5})
            await chat.expect("feedback_saved")
        await chat.close()
    return Conversations(ids, answers, rated[-1], rated[1])


@pytest.fixture(scope="module")
def conversations(generating_server: ServerProcess) -> Conversations:
    return asyncio.run(_hold_conversations(generating_server))


@pytest.fixture(scope="module")
def exported(generating_server: ServerProcess, conversations: Conversations, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dataset.jsonl"
    # The server is still running: the export reads the WAL database alongside it.
    result = voicebot("export-dataset", "--data-dir", str(generating_server.data_dir), "--out", str(out))
    written = int(re.search(r"wrote (\d+) lines", result.stdout).group(1))  # type: ignore[union-attr]
    redactions = int(re.search(r"redactions: (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert written == len(conversations.answers) - 1 == len(read_jsonl(out))
    assert redactions >= 2  # the e-mail in the user's message and in the answer
    print(result.stdout)
    return out


def test_the_generator_served_the_conversations(conversations: Conversations, tiny_seq2seq: Path) -> None:
    responses = [answer["trace"]["response"] for answer in conversations.answers]
    assert {r["generator"] for r in responses if r["path"] in ("action", "knowledge", "template")} == {str(tiny_seq2seq)}
    assert all(r["prompt_fields"]["user"] for r in responses)


def test_export_is_redacted_filtered_and_in_the_served_prompt_format(exported: Path, conversations: Conversations) -> None:
    lines = read_jsonl(exported)
    raw = exported.read_text(encoding="utf-8")
    assert EMAIL not in raw and "maria.garcia" not in raw
    login = next(line for line in lines if line["intent"] == "login_problem")
    assert "<EMAIL>" in login["input"] and "<EMAIL>" in login["target"]
    assert all(line["input"].startswith("answer in ") for line in lines)
    assert {line["language"] for line in lines} == {"en", "de", "zh"}
    targets = [line["target"] for line in lines]
    assert conversations.disliked["text"] not in targets  # rated -1: left out
    assert "12345" in conversations.disliked["text"]
    liked = next(line for line in lines if line["target"] == conversations.liked["text"])
    assert liked["turn_rating"] == 1 and liked["conversation_rating"] == 5
    keys = {hashlib.sha256(cid.encode()).hexdigest()[:16] for cid in conversations.ids}
    assert {line["conversation"] for line in lines} == keys
    assert not any(cid in raw for cid in conversations.ids)
    assert set(lines[0]) >= {"input", "target", "language", "intent", "turn_rating", "conversation_rating", "conversation"}


def test_export_rating_options(generating_server: ServerProcess, conversations: Conversations, tmp_path: Path) -> None:
    everything = tmp_path / "all.jsonl"
    voicebot("export-dataset", "--data-dir", str(generating_server.data_dir), "--out", str(everything), "--min-turn-rating", "-1")
    assert len(read_jsonl(everything)) == len(conversations.answers)
    rated = tmp_path / "rated.jsonl"
    result = voicebot("export-dataset", "--data-dir", str(generating_server.data_dir), "--out", str(rated), "--rated-only")
    assert [line["target"] for line in read_jsonl(rated)] == [conversations.liked["text"]]
    assert "unrated" in result.stdout and "rated -1" in result.stdout
    good = tmp_path / "good.jsonl"
    voicebot("export-dataset", "--data-dir", str(generating_server.data_dir), "--out", str(good),
             "--min-turn-rating", "1", "--rated-only", "--redact-pattern", r"order=(?<!\d)\d{5}(?!\d)")
    assert [line["target"] for line in read_jsonl(good)] == [conversations.liked["text"]]


@pytest.fixture(scope="module")
def finetuned(exported: Path, tiny_seq2seq: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("finetune") / "generator-v2"
    result = voicebot("train", "generator", "--data", str(exported), "--base", str(tiny_seq2seq), "--out", str(out),
                      "--steps", "40", "--learning-rate", "1e-3", "--batch-size", "4")
    print(result.stdout)
    return out, result.stdout


def test_train_generator_lowers_the_loss_and_writes_a_loadable_folder(finetuned: tuple[Path, str]) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out, stdout = finetuned
    before = float(re.search(r"before training: ([\d.]+)", stdout).group(1))  # type: ignore[union-attr]
    after = float(re.search(r"after training: ([\d.]+)", stdout).group(1))  # type: ignore[union-attr]
    first, last = map(float, re.search(r"training loss: step 1 ([\d.]+) -> step 40 ([\d.]+)", stdout).groups())  # type: ignore[union-attr]
    assert after < before and last < first
    assert stdout.count("\n") <= 6, stdout  # quiet: no per-step lines, no progress bars
    report = json.loads((out / "voicebot-training.json").read_text())
    assert report["steps"] == 40 and report["loss_after"] < report["loss_before"]
    model = AutoModelForSeq2SeqLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size >= len(tokenizer)
    # Only the final folder is left: no checkpoints, no half-written copy beside it.
    assert not any(p.name.startswith("checkpoint") for p in out.rglob("*"))
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_train_generator_keeps_the_nlu_train_command_and_refuses_foreign_folders(exported: Path, tiny_seq2seq: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "voicebot", "train", "generator", "--data", str(exported), "--base", str(tiny_seq2seq),
                             "--out", str(tmp_path), "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "choose a new --out" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
    missing = subprocess.run([sys.executable, "-m", "voicebot", "train", "generator", "--data", str(tmp_path / "none.jsonl"),
                              "--base", str(tiny_seq2seq), "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no dataset" in missing.stderr


async def test_hot_swap_to_the_finetuned_generator_keeps_sessions(generating_server: ServerProcess, finetuned: tuple[Path, str],
                                                                tiny_seq2seq: Path) -> None:
    out, _ = finetuned
    server = generating_server
    talking = await ChatClient.open(server.ws_url, language="en")
    waiting = await ChatClient.open(server.ws_url, language="es")
    before = await talking.say("what payment methods do you accept?")
    assert before["trace"]["response"]["generator"] == str(tiny_seq2seq)
    await waiting.say("¿cuál es la política de devoluciones?")

    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers, timeout=120) as client:
        swapped = await client.put("/api/generator", json={"model": str(out)})
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["model"] == str(out)

        asked = await talking.say("where is my order 54321?")
        assert asked["trace"]["response"]["generator"] is None  # identification replies are never generated
        after = await talking.say("anna.schmidt@example.com")
        assert after["trace"]["response"]["generator"] == str(out)
        assert "54321" in after["text"]
        assert after["trace"]["turn"] == before["trace"]["turn"] + 2  # the same conversation went on
        other = await waiting.say("¿qué métodos de pago aceptan?")
        assert other["trace"]["response"]["generator"] == str(out)
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["active_sessions"] >= 2
        assert (await client.get("/api/generator")).json()["model"] == str(out)
    await talking.close()
    await waiting.close()
