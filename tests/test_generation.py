"""Seq2seq generation with tiny random models built here: loading, batching, streaming,
cancellation, failure isolation, the grounding guard, slot proposals, a live chat session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir
from voicebot.dialogue.domain import load_domain
from voicebot.dialogue.grounding import PromptFields, build_prompt, check_grounding, required_facts
from voicebot.dialogue.slot_proposals import parse_proposals
from voicebot.pipelines.generation.seq2seq import GenerationError, Seq2SeqGenerator
from voicebot.pipelines.lid.text import TextLanguageDetector
from voicebot.pipelines.nlu.entities import EntityExtractor
from voicebot.resources import demo_domain_dir

PROMPTS = [
    "answer in en | intent: order_status | facts: order_id=12345 | user: where is my order 12345",
    "answer in zh | intent: policy_question | user: 退货政策是什么",
    "answer in es | intent: cancel_order | user: quiero cancelar mi pedido",
    "answer in de | intent: internet_problem | user: mein Internet geht nicht",
    "answer in fr | intent: greet | user: bonjour",
    "answer in en | intent: thanks | user: thanks a lot, that was really helpful, have a nice day",
]


@pytest.fixture(scope="module")
def generator(tiny_seq2seq: Path) -> Iterator[Seq2SeqGenerator]:
    loaded = Seq2SeqGenerator(str(tiny_seq2seq), max_batch=8, max_wait_s=0.05)
    loaded.warm_up()
    yield loaded
    loaded.close()


def test_loads_t5_and_mt5_folders_on_cpu_in_fp32_and_int8(tiny_seq2seq: Path, tiny_mt5: Path) -> None:
    for folder, precision in [(tiny_seq2seq, "auto"), (tiny_mt5, "auto"), (tiny_seq2seq, "int8")]:
        generator = Seq2SeqGenerator(str(folder), precision=precision)
        try:
            assert generator.device == "cpu" and generator.precision == ("int8" if precision == "int8" else "float32")
            result = asyncio.run(generator.generate("answer in en | user: hello", 5))
            assert 1 <= result.tokens <= 5 and result.model == str(folder)
        finally:
            generator.close()
    with pytest.raises(ValueError, match="int8"):
        Seq2SeqGenerator(str(tiny_seq2seq), device="cuda", precision="int8")


async def test_greedy_output_is_the_same_alone_and_batched(generator: Seq2SeqGenerator) -> None:
    alone = [(await generator.generate(prompt, 12)).text for prompt in PROMPTS]
    before = len(generator.batch_sizes)
    batched = await asyncio.gather(*(generator.generate(prompt, 12) for prompt in PROMPTS))
    assert [r.text for r in batched] == alone
    assert max(generator.batch_sizes[before:]) > 1 and max(r.batch_size for r in batched) > 1
    assert len(set(alone)) > 1  # the prompts really lead to different outputs


async def test_per_request_max_length_inside_one_batch(generator: Seq2SeqGenerator) -> None:
    short, long = await asyncio.gather(generator.generate(PROMPTS[0], 2), generator.generate(PROMPTS[1], 10))
    assert short.tokens <= 2 and long.tokens <= 10 and short.batch_size == long.batch_size == 2


async def test_streaming_pieces_arrive_in_order_and_add_up(generator: Seq2SeqGenerator) -> None:
    pieces = [piece async for piece in generator.stream(PROMPTS[5], 12)]
    final = await generator.generate(PROMPTS[5], 12)
    assert len(pieces) > 1 and "".join(pieces) == final.text


async def test_cancelled_request_leaves_the_batch_and_others_are_undisturbed(generator: Seq2SeqGenerator) -> None:
    expected = [(await generator.generate(prompt, 40)).text for prompt in PROMPTS[1:4]]
    pieces, result, cancel = generator.start_stream(PROMPTS[0], 200)
    others = [asyncio.ensure_future(generator.generate(prompt, 40)) for prompt in PROMPTS[1:4]]
    received = 0
    async for _ in pieces:
        received += 1
        if received == 3:
            cancel.set()  # barge-in
    cancelled = await result
    assert cancelled.cancelled and cancelled.tokens < 200
    assert [r.text for r in await asyncio.gather(*others)] == expected


async def test_a_failing_request_does_not_fail_its_batch_mates(generator: Seq2SeqGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    real_decode = generator._decode

    def decode_failing_on_poison(batch):  # type: ignore[no-untyped-def]
        if any("POISON" in request.prompt for request in batch):
            raise RuntimeError("CUDA out of memory (simulated for the poisoned request)")
        return real_decode(batch)

    monkeypatch.setattr(generator, "_decode", decode_failing_on_poison)
    prompts = [PROMPTS[0], "POISON " + PROMPTS[1], PROMPTS[2]]
    results = await asyncio.gather(*(generator.generate(p, 8) for p in prompts), return_exceptions=True)
    assert isinstance(results[1], GenerationError) and "simulated" in str(results[1])
    assert results[0].text and results[2].text  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def detector() -> TextLanguageDetector:
    domain, _ = load_domain(demo_domain_dir())
    assert domain is not None
    found = TextLanguageDetector(domain.languages)
    texts = [t for lang in domain.examples.values() for ts in lang.values() for t in ts]
    found.fit_domain(texts, [lang for lang, intents in domain.examples.items() for ts in intents.values() for _ in ts])
    return found


def test_grounding_guard_keeps_facts_and_language(detector: TextLanguageDetector) -> None:
    fields = PromptFields("en", "order_status", "where is my order 12345?", {"order_id": "12345", "item": "Redmi Note 13", "eta": "2026-12-03"},
                          template="Order 12345 (Redmi Note 13) is on its way. Expected delivery: 2026-12-03.")
    assert required_facts(fields) == ["12345", "Redmi Note 13", "2026-12-03"]
    assert check_grounding("Good news: your Redmi Note 13 (order 12345) is on its way and should arrive on 2026-12-03.", fields, detector).passed
    wrong_date = check_grounding("Your Redmi Note 13 (order 12345) is on its way and should arrive on 2026-12-04.", fields, detector)
    assert not wrong_date.passed and "2026-12-03" in wrong_date.reasons[0]
    wrong_language = check_grounding("Ihr Redmi Note 13 (Bestellung 12345) ist unterwegs und kommt am 2026-12-03 an.", fields, detector)
    assert not wrong_language.passed and "is not en" in wrong_language.reasons[-1]
    assert not check_grounding("", fields, detector).passed
    prompt = build_prompt(fields)
    assert prompt.startswith("answer in en") and "order_id=12345" in prompt and prompt.endswith("user: where is my order 12345?")


def test_slot_proposals_only_fill_gaps_with_valid_values() -> None:
    domain, _ = load_domain(demo_domain_dir())
    assert domain is not None
    extractor = EntityExtractor(domain.spec)
    text = "it's the one with the number 54321, over wifi"
    found = [e for e in extractor.extract(text, "en") if e.slot == "connection_type"]
    proposals = parse_proposals("order_id=54321; connection_type=mobile; email=not-an-email; bogus=1; order_id=1", text, domain.spec, extractor, "en", found)
    assert [(p.slot, p.value, p.confidence) for p in proposals] == [("order_id", "54321", 0.5)]
    assert parse_proposals("autre autre autre", text, domain.spec, extractor, "en", []) == []


async def test_live_chat_streams_generated_text_and_falls_back_to_the_grounded_template(tmp_path: Path, trained_models: Path, tiny_seq2seq: Path) -> None:
    env = {"VOICEBOT_GENERATION__BACKEND": "seq2seq", "VOICEBOT_GENERATION__MODEL": str(tiny_seq2seq),
           "VOICEBOT_GENERATION__MAX_NEW_TOKENS": "16", "VOICEBOT_GENERATION__STATE_TRACKING": "true"}
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=env).start()
    try:
        chat = await ChatClient.open(server.ws_url, language="en")
        asked = await chat.say("where is my order 12345?")
        # The identification question is said as written: no model phrases (or adds to) it.
        assert asked["trace"]["response"]["path"] == "identify" and asked["trace"]["response"]["generator"] is None
        assert "Redmi Note 13" not in asked["text"] and "generated_text" not in asked["trace"]["response"]
        reply = await chat.say("li.wei@example.com")
        response = reply["trace"]["response"]
        assert response["generator"] == str(tiny_seq2seq) and response["generated_text"]
        # Random weights say nonsense: the guard rejects it and the grounded answer is final.
        assert response["used"] == "template" and response["guard"]["passed"] is False
        assert "Redmi Note 13" in reply["text"] and "".join(reply["chunks"]) == response["generated_text"]
        assert reply["trace"]["timings_ms"]["generation"] > 0 and "slot_proposals" in reply["trace"]
        info = json.loads((await asyncio.to_thread(__import__("httpx").get, f"{server.url}/api/generator", headers=server.admin_headers)).text)
        assert info == {"backend": "seq2seq", "model": str(tiny_seq2seq), "precision": "float32", "device": "cpu"}
        # Paths the generator does not phrase stay templates.
        handoff = await chat.say("I want to talk to a human agent")
        assert handoff["trace"]["response"]["generator"] is None and handoff["handoff"] is True
        await chat.close()
    finally:
        server.stop()


def test_generation_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "VOICEBOT_GENERATION__BACKEND": "seq2seq"}
    result = subprocess.run([sys.executable, "-m", "voicebot", "chat", "--data-dir", str(tmp_path)], input="hi\n", env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "generation.model" in result.stderr
