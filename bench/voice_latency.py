"""Voice-to-voice latency over many calls, measured at a WebRTC caller on loopback.

From the caller's last voiced frame sent to the first bot frame received above -40 dBFS, with the
server's breakdown per turn: endpointing wait (the end-of-turn silence), recognition still running
after the turn ended (it starts speculatively at the first pause), language ID + dialogue +
storage, and TTS until the first audio. Levels of concurrent calls show how many calls these cores
sustain. Figures only.

    python bench/voice_latency.py --calls 1,2,4 --questions 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from voicebot.channels.webrtc.caller import Caller
from voicebot.channels.webrtc.track import OUT_RATE
from voicebot.voice.audio import resample

QUESTIONS = [
    ("en", "What is your return policy?"),
    ("en", "What payment methods do you accept?"),
    ("en", "How long does shipping take?"),
    ("en", "I forgot my password."),
    ("en", "What is your refund policy?"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    env = {**os.environ, "VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true",
           "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "voicebot", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    raise RuntimeError("server did not start")


async def one_call(url: str, speech: list[np.ndarray], results: list[dict[str, float]]) -> None:
    caller = Caller(url, "en", loopback_only=True)
    await caller.connect()
    try:
        await caller.wait_for("session", timeout=30)
        for index, audio in enumerate(speech):
            ended = await caller.say(audio)
            message = (await caller.wait_for("bot_message", count=index + 1, timeout=120))[index]
            first_audio = (await caller.wait_for("first_audio", count=index + 1, timeout=120))[index]
            await caller.wait_quiet(120)
            latency = caller.latency_after(ended)
            trace = message["trace"]
            timings = trace.get("timings_ms", {})
            results.append({
                "voice_to_voice_ms": round(latency * 1000, 1) if latency is not None else float("nan"),
                "endpointing_ms": float(trace["voice"]["endpointing"]["end_of_turn_silence_ms"]),
                "asr_after_end_ms": float(trace["voice"]["asr"]["wait_after_end_of_turn_ms"]),
                "asr_compute_ms": float(trace["voice"]["asr"]["compute_ms"]),
                "asr_speculative": float(trace["voice"]["asr"]["speculative"]),
                "dialogue_ms": float(sum(v for k, v in timings.items() if k in ("language", "nlu", "dialogue", "generation", "response", "storage"))),
                "tts_first_chunk_ms": float(first_audio["tts_first_chunk_ms"]),
                "server_end_of_turn_to_audio_ms": float(first_audio["after_end_of_turn_ms"]),
            })
            await asyncio.sleep(0.5)
    finally:
        await caller.hang_up()


async def main(args: argparse.Namespace) -> dict[str, object]:
    from voicebot.pipelines.tts.router import VoiceRouter

    voices = VoiceRouter.default()
    speech = []
    for language, text in QUESTIONS[: args.questions]:
        chunks = [c async for c in voices.synthesize(text, language)]
        speech.append(np.concatenate([resample(np.concatenate(chunks), voices.sample_rate(language), OUT_RATE),
                                      np.zeros(OUT_RATE // 5, dtype=np.int16)]))
    voices.close()
    data_dir = Path(tempfile.mkdtemp())
    process, url = start_server(data_dir)
    report: dict[str, object] = {"levels": {}}
    try:
        await one_call(url, speech[:1], [])  # warm-up
        for calls in [int(n) for n in args.calls.split(",")]:
            results: list[dict[str, float]] = []
            await asyncio.gather(*(one_call(url, speech, results) for _ in range(calls)))
            figures = {key: {"p50": round(float(np.nanpercentile([r[key] for r in results], 50)), 1),
                             "p95": round(float(np.nanpercentile([r[key] for r in results], 95)), 1)} for key in results[0]}
            report["levels"][calls] = {"turns": len(results), **figures}  # type: ignore[index]
            v2v = figures["voice_to_voice_ms"]
            print(f"{calls} concurrent call(s), {len(results)} turns: voice-to-voice p50 {v2v['p50']} ms, p95 {v2v['p95']} ms", flush=True)
            for key, value in figures.items():
                if key != "voice_to_voice_ms":
                    print(f"    {key:<32} p50 {value['p50']:>8} p95 {value['p95']:>8}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,2,4", help="concurrent calls per level")
    parser.add_argument("--questions", type=int, default=3, help="questions per call")
    arguments = parser.parse_args()
    print(f"voice latency benchmark on {os.cpu_count()} CPU cores (caller, server and models share them); figures only", flush=True)
    print(json.dumps(asyncio.run(main(arguments))))
