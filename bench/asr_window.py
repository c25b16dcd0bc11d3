"""Whisper base on a shorter encoder window: time and word error rate against the full 30 s one.

``asr.encoder_window_s`` (faster-whisper backend) encodes a short utterance over max(window,
audio + 1 s) instead of Whisper's fixed 30 s; rows whose text fails Whisper's tests are
recognised again on 30 s. This prints, per window, the recognition time (p50 per utterance, one
at a time, as a call's turn is) and the corpus word error rate over the same sentences (Piper in
English, espeak-ng in German and Spanish), so a window is kept only where accuracy holds.
``--speech-context`` runs every window twice, without and with the demo domain's
``speech_context`` (Whisper's prompt), to show what the context does to time and accuracy.

    python bench/asr_window.py --windows 30,10,5
    python bench/asr_window.py --windows 15 --speech-context
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.speech_checks import corpus_word_error_rate  # noqa: E402 - jiwer, with the tests' normalisation
from voicebot.voice.audio import resample  # noqa: E402

SENTENCES = [
    ("en", "Hi where is my order number 12345?"), ("en", "What is your return policy?"), ("en", "I forgot my password."),
    ("en", "My number is 1 2 3 4 5 6 7."), ("en", "Hi, I ordered a blue jacket last week, and it still has not arrived, can you check where it is?"),
    ("en", "Wait, stop, I want to talk to a human agent please."), ("en", "It is my Wi-Fi at home."),
    ("en", "What payment methods do you accept?"), ("en", "How long does shipping take?"), ("en", "My internet is not working."),
    ("en", "What is your refund policy?"), ("en", "Where is my order? The number is 5 4 3 2 1."),
    ("en", "Can I change the delivery address for my order?"), ("en", "Thank you, goodbye."),
    ("de", "Ich habe mein Passwort vergessen, können Sie mir bitte helfen?"), ("de", "Wo ist meine Bestellung?"),
    ("es", "Quiero hablar con una persona."),
    # everyday requests outside the demo's own topics (added with the speech context, so it is not judged only on its own words)
    ("en", "I would like to change my shipping address to Berlin."), ("en", "The app keeps crashing when I open my account."),
    ("en", "Do you have this jacket in a larger size?"), ("en", "I was charged twice for the same purchase."),
    ("en", "Can I speak to someone about my invoice?"), ("en", "My new phone will not turn on."), ("en", "Please cancel my subscription."),
    ("en", "The package was left at the wrong door."), ("de", "Mein Internet funktioniert seit gestern nicht mehr."),
    ("de", "Ich möchte meine Adresse ändern."), ("es", "¿Dónde está mi pedido?"),
]


async def speech(voices, language: str, text: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    chunks = [chunk async for chunk in voices.synthesize(text, language)]
    audio = resample(np.concatenate(chunks), voices.sample_rate(language), 16_000).astype(np.float32) / 32768.0
    return np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(8000, np.float32)])  # as the endpointer cuts it


def demo_speech_context() -> dict[str, str]:
    from voicebot.dialogue.domain import load_domain
    from voicebot.resources import demo_domain_dir

    domain, _ = load_domain(demo_domain_dir())
    assert domain is not None
    return domain.spec.speech_context


def variants(spec: str) -> list[tuple[float, int]]:
    """'30,15,20:1' -> [(30, 0), (15, 0), (20, 1)]: a window in seconds, optionally ':threads' (0: CTranslate2's default)."""
    out = []
    for item in spec.split(","):
        window, _, threads = item.partition(":")
        out.append((float(window), int(threads or 0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", default="30,10", help="encoder windows in seconds (30: Whisper's own), each optionally "
                        "':N' for N CTranslate2 CPU threads, e.g. 30,15,30:1")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the sentences (more samples per variant)")
    parser.add_argument("--speech-context", action="store_true", help="each window also with the demo domain's speech_context")
    args = parser.parse_args()
    from voicebot.pipelines.asr.faster_whisper_backend import FasterWhisperRecognizer
    from voicebot.pipelines.tts.router import VoiceRouter

    voices = VoiceRouter.default()
    audio = [asyncio.run(speech(voices, language, text)) for language, text in SENTENCES]
    voices.close()
    languages = sorted({language for language, _ in SENTENCES})
    print(f"{len(SENTENCES)} utterances x {args.rounds} round(s) on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          "variants interleaved utterance by utterance (a load change hits them alike); figures only")
    specs = [(window, threads, with_context) for window, threads in variants(args.windows)
             for with_context in ([False, True] if args.speech_context else [False])]
    recognizers = [FasterWhisperRecognizer("base", encoder_window_s=window, cpu_threads=threads) for window, threads, _ in specs]
    context = demo_speech_context()
    for recognizer in recognizers:
        recognizer.transcribe_many([(audio[0], None, languages)])  # warm-up
    times: list[list[float]] = [[] for _ in specs]
    texts: list[list[str]] = [[] for _ in specs]
    for _ in range(args.rounds):
        for clip in audio:
            for index, recognizer in enumerate(recognizers):
                started = time.perf_counter()
                texts[index].append(asyncio.run(recognizer.transcribe(clip, None, languages, context=context if specs[index][2] else None)).text)
                times[index].append(time.perf_counter() - started)
    references = [t for _, t in SENTENCES] * args.rounds
    english = [i for i, (language, _) in enumerate(SENTENCES * args.rounds) if language == "en"]
    for (window, threads, with_context), took, heard in zip(specs, times, texts, strict=True):
        wer = corpus_word_error_rate(references, heard)
        wer_en = corpus_word_error_rate([references[i] for i in english], [heard[i] for i in english])
        print(f"window {window:>4.0f} s, cpu_threads {threads or 'default'}{', speech context' if with_context else ''}: p50 {np.percentile(took, 50) * 1000:6.0f} ms, "
              f"p95 {np.percentile(took, 95) * 1000:6.0f} ms per utterance; WER {wer:.3f} (English {wer_en:.3f})", flush=True)
    for recognizer in recognizers:
        recognizer.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
