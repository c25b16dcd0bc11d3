"""ASR figures: real-time factor and word error rate of the bundled Whisper models.

    .venv/bin/python bench/asr_bench.py [--model base] [--device auto] [--threads 0] [--skip-stock]

Speech is synthesised locally (Piper en_US joe and espeak-ng for English, espeak-ng for German and
Spanish; espeak's zh/fr are too robotic for Whisper base), resampled to 16 kHz with
scipy.signal.resample_poly. Real-time factor (RTF) = compute time / audio duration (below 1 is
faster than real time). Figures only: nothing here passes or fails. Other processes on the machine
skew timings, so the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from math import gcd
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCES: dict[str, list[tuple[str, str]]] = {  # (engine, text); no digits, so WER is not about number formatting
    "en": [
        ("piper", "Hi, where is my order? I ordered a phone charger last week."),
        ("piper", "My internet connection keeps dropping every evening."),
        ("espeak", "I would like to cancel my order and get a refund."),
        ("espeak", "I forgot my password and cannot log in to my account."),
    ],
    "de": [
        ("espeak", "Guten Tag, wo ist meine Bestellung?"),
        ("espeak", "Mein Telefon kann keine Verbindung zum Internet herstellen."),
        ("espeak", "Ich möchte meine Bestellung stornieren."),
        ("espeak", "Ich habe mein Passwort vergessen."),
    ],
    "es": [
        ("espeak", "Hola, ¿dónde está mi pedido?"),
        ("espeak", "Mi teléfono no se puede conectar a internet."),
        ("espeak", "Quiero cancelar mi pedido y recibir un reembolso."),
        ("espeak", "Olvidé mi contraseña y no puedo entrar."),
    ],
}
ALLOWED = ["en", "de", "es", "fr", "zh"]


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = gcd(rate, 16_000)
    return resample_poly(audio, 16_000 // g, rate // g).astype(np.float32)


def synthesise(folder: Path) -> list[tuple[str, str, np.ndarray]]:
    import soundfile as sf

    from voicebot.voice.models import available_models

    espeak = shutil.which("espeak-ng")
    joe = next(m for m in available_models() if m["name"] == "piper-en_US-joe-medium")
    voice = None
    items = []
    for language, sentences in SENTENCES.items():
        for n, (engine, text) in enumerate(sentences):
            if engine == "piper" and joe["present"]:
                if voice is None:
                    from piper import PiperVoice

                    voice = PiperVoice.load(joe["path"])
                chunks = list(voice.synthesize(text))
                audio = to_16k(np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate)
            elif espeak:
                path = folder / f"{language}-{n}.wav"
                subprocess.run([espeak, "-v", language, "-w", str(path), text], check=True)
                data, rate = sf.read(path, dtype="float32")
                audio = to_16k(data, rate)
            else:
                continue
            items.append((language, text, audio))
    return items


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate, counted as the tests count it (tests/speech_checks.py: jiwer when
    installed; accents, punctuation and how a number read aloud is written are not errors)."""
    from tests.speech_checks import corpus_word_error_rate

    return corpus_word_error_rate(references, hypotheses)


def run_config(recognizer, items, *, known: bool) -> dict:  # noqa: ANN001
    """One utterance at a time (a lone caller): per-utterance compute, RTF, language accuracy, WER."""
    computes, durations, hyps, correct = [], [], [], 0
    for language, _text, audio in items:
        started = time.perf_counter()
        [result] = recognizer.transcribe_many([(audio, language if known else None, None if known else ALLOWED)])
        computes.append(time.perf_counter() - started)
        durations.append(audio.size / 16_000)
        hyps.append(result.text)
        correct += result.language == language
    per_language = {}
    for language in SENTENCES:
        rows = [i for i, item in enumerate(items) if item[0] == language]
        per_language[language] = wer([items[i][1] for i in rows], [hyps[i] for i in rows])
    return {
        "rtf": sum(computes) / sum(durations),
        "median_s": statistics.median(computes),
        "p_max_s": max(computes),
        "lang_acc": correct / len(items),
        "wer": per_language,
        "wer_all": wer([i[1] for i in items], hyps),
        "hyps": hyps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 CPU threads (0: its default)")
    parser.add_argument("--skip-stock", action="store_true", help="skip faster-whisper's stock transcribe() (beam 5 + detection)")
    parser.add_argument("--show", action="store_true", help="print every hypothesis")
    args = parser.parse_args()

    from voicebot.pipelines.asr.faster_whisper_backend import FasterWhisperRecognizer

    with tempfile.TemporaryDirectory() as tmp:
        items = synthesise(Path(tmp))
    audio_s = sum(a.size for *_, a in items) / 16_000
    print(f"machine: {os.cpu_count()} CPU cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"speech: {len(items)} utterances, {audio_s:.1f} s, mean {audio_s / len(items):.2f} s "
          f"({', '.join(f'{lang} {sum(1 for i in items if i[0] == lang)}' for lang in SENTENCES)})")

    started = time.perf_counter()
    recognizer = FasterWhisperRecognizer(args.model, device=args.device, compute_type=args.compute_type, cpu_threads=args.threads)
    print(f"model: {recognizer.name} on {recognizer.device} {recognizer.compute_type}, beam {recognizer.beam_size}, "
          f"loaded (incl. first-time assembly) in {time.perf_counter() - started:.2f} s")
    recognizer.transcribe_many([(items[0][2], "en", None)])  # warm-up

    results = {
        "detect language (allowed en,de,es,fr,zh)": run_config(recognizer, items, known=False),
        "language known": run_config(recognizer, items, known=True),
    }
    print()
    print(f"{'one utterance at a time':44s} {'RTF':>6s} {'median s':>9s} {'max s':>7s} {'lang acc':>9s} "
          + " ".join(f"{'WER ' + lang:>7s}" for lang in SENTENCES) + f" {'WER all':>8s}")
    for name, r in results.items():
        print(f"{name:44s} {r['rtf']:6.3f} {r['median_s']:9.2f} {r['p_max_s']:7.2f} {r['lang_acc']:9.0%} "
              + " ".join(f"{r['wer'][lang]:7.1%}" for lang in SENTENCES) + f" {r['wer_all']:8.1%}")

    # Batched: all utterances handed over at once (as concurrent sessions would), max_batch at a time.
    batch = recognizer.max_batch
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        recognizer.transcribe_many([(a, None, ALLOWED) for _l, _t, a in items[start:start + batch]])
    batched = time.perf_counter() - started
    sequential = results["detect language (allowed en,de,es,fr,zh)"]["rtf"] * audio_s
    print(f"\nbatched ({batch} per forward pass, detection): {batched:.2f} s for {len(items)} utterances, RTF {batched / audio_s:.3f}; "
          f"one at a time {sequential:.2f} s -> throughput x{sequential / batched:.2f}")

    if not args.skip_stock:
        # faster-whisper's stock call, for reference: beam 5, detection over all 99 languages, temperature fallback.
        model = recognizer._model
        computes = []
        hyps = []
        for _language, _text, audio in items:
            started = time.perf_counter()
            segments, _info = model.transcribe(audio, vad_filter=False)
            hyps.append(" ".join(s.text for s in segments))  # lazy: consuming runs the decoder
            computes.append(time.perf_counter() - started)
        print(f"stock WhisperModel.transcribe (beam 5, detection): RTF {sum(computes) / audio_s:.3f}, median {statistics.median(computes):.2f} s, "
              f"WER all {wer([i[1] for i in items], hyps):.1%}")

    if args.show:
        for (language, text, _a), hyp in zip(items, results["detect language (allowed en,de,es,fr,zh)"]["hyps"], strict=True):
            print(f"[{language}] {text!r} -> {hyp!r}")
    recognizer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
