"""Generation throughput and latency against concurrency, with cross-session batching on and off.

A randomly initialised model of t5-small's dimensions (no weights can be downloaded here; the
cost of a forward pass depends on the shapes, not on the values) is served by the real
Seq2SeqGenerator. N concurrent "sessions" each send requests back to back; we report requests/s,
generated tokens/s, p50/p95 latency and the batched/unbatched ratios, in one run.

    python bench/generation_throughput.py                       # CPU, fp32
    python bench/generation_throughput.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from voicebot.pipelines.generation.random_model import T5_SMALL, build_random_seq2seq, demo_corpus
from voicebot.pipelines.generation.seq2seq import Seq2SeqGenerator
from voicebot.resources import demo_domain_dir

PROMPTS = [
    "answer in en | intent: order_status | facts: order_id=12345; item=Redmi Note 13; eta=2026-12-03 | user: where is my order 12345?",
    "answer in zh | intent: policy_question | knowledge: 未使用且包装完好的商品可在 30 天内退货。 | user: 退货政策是什么",
    "answer in es | intent: cancel_order | facts: order_id=67890; amount=899.00 EUR | user: quiero cancelar mi pedido 67890",
    "answer in de | intent: internet_problem | facts: connection_type=wifi | user: mein WLAN geht nicht",
    "answer in fr | intent: login_problem | facts: email=jean.dupont@example.com | user: je n'arrive pas à me connecter",
]


async def run_level(generator: Seq2SeqGenerator, sessions: int, requests_per_session: int, max_new_tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    tokens = 0

    async def session(index: int) -> None:
        nonlocal tokens
        for turn in range(requests_per_session):
            started = time.perf_counter()
            result = await generator.generate(PROMPTS[(index + turn) % len(PROMPTS)], max_new_tokens)
            latencies.append(time.perf_counter() - started)
            tokens += result.tokens

    first_batch = len(generator.batch_sizes)
    started = time.perf_counter()
    await asyncio.gather(*(session(i) for i in range(sessions)))
    elapsed = time.perf_counter() - started
    sizes = generator.batch_sizes[first_batch:]
    return {
        "sessions": sessions, "requests": len(latencies), "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 3), "tokens_per_s": round(tokens / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1), "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
        "mean_batch": round(float(np.mean(sizes)), 2), "tokens_per_request": round(tokens / len(latencies), 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    model_dir = Path(args.model) if args.model else Path(tempfile.mkdtemp()) / "t5-small-random"
    if not args.model:
        build_random_seq2seq(model_dir, demo_corpus(demo_domain_dir()), size=T5_SMALL, vocab_size=8000)
    levels = [int(n) for n in args.sessions.split(",")]
    report: dict[str, object] = {"model": "random t5-small dimensions" if not args.model else args.model, "levels": {}}
    for mode, max_batch in (("unbatched", 1), ("batched", args.max_batch)):
        generator = Seq2SeqGenerator(str(model_dir), device=args.device, precision=args.precision, max_batch=max_batch, max_wait_s=args.max_wait_s)
        generator.warm_up()
        report["device"], report["precision"] = generator.device, generator.precision
        for sessions in levels:
            figures = await run_level(generator, sessions, args.requests, args.max_new_tokens)
            report["levels"].setdefault(sessions, {})[mode] = figures  # type: ignore[union-attr]
            print(f"{mode:>10} {sessions:>4} sessions: {figures['requests_per_s']:>8.2f} req/s {figures['tokens_per_s']:>9.1f} tok/s "
                  f"p50 {figures['p50_ms']:>8.1f} ms p95 {figures['p95_ms']:>8.1f} ms mean batch {figures['mean_batch']:>5.1f}", flush=True)
        generator.close()
    print("\nratios batched/unbatched (throughput up is better; p95 ratio vs a lone batched session):")
    levels_report = report["levels"]  # type: ignore[assignment]
    lone_p95 = levels_report[levels[0]]["batched"]["p95_ms"]  # type: ignore[index]
    for sessions in levels:
        pair = levels_report[sessions]  # type: ignore[index]
        ratio = pair["batched"]["requests_per_s"] / pair["unbatched"]["requests_per_s"]
        pair["throughput_ratio"] = round(ratio, 2)
        pair["p95_vs_lone"] = round(pair["batched"]["p95_ms"] / lone_p95, 2)
        print(f"  {sessions:>4} sessions: throughput x{ratio:.2f}, batched p95 / lone-session p95 = {pair['p95_vs_lone']:.2f}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or id (default: random weights, t5-small dimensions)")
    parser.add_argument("--sessions", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=2, help="requests per session per level")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-s", type=float, default=0.01)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"generation benchmark: {os.cpu_count()} CPU cores; figures only, nothing passes or fails on time", flush=True)
    result = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
