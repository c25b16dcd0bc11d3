"""Voice-to-voice latency over the phone path, next to the WebRTC path, on one server in one run.

Phone: a simulated carrier (``voicebot.channels.twilio.caller``) dials the ``twilio`` channel,
streams Piper speech as 20 ms μ-law frames in real time and times from its last voiced frame sent
to the first bot frame received above -40 dBFS. WebRTC: the same questions through the aiortc
caller of ``bench/voice_latency.py``, timed the same way. p50/p95 per path and number of
concurrent calls. Figures only.

    python bench/phone_latency.py --calls 1,2 --questions 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from voice_latency import QUESTIONS, free_port, one_call, start_server

from voicebot.channels.twilio.caller import SILENCE_DBFS, PhoneCaller, dbfs
from voicebot.channels.twilio.codec import RATE
from voicebot.channels.webrtc.track import OUT_RATE
from voicebot.voice.audio import resample

AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ADMIN_KEY = "bench-admin-key-0123456789abcdef0123"  # reads the stored traces for the server's side of each turn
QUIET_S = 1.5  # no loud bot frame for this long: the answer is over


async def phone_call(url: str, speech: list[np.ndarray], results: list[dict[str, float]], timeout_s: float = 120) -> None:
    caller = PhoneCaller(url, AUTH_TOKEN)
    await caller.connect()
    try:
        for audio in speech:
            voiced_at = await caller.say(audio)
            deadline = time.monotonic() + timeout_s
            while (latency := caller.latency_after(voiced_at)) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            while time.monotonic() < deadline:  # let the answer play out before the next question
                loud = [t for f, t in zip(caller.received.frames, caller.received.frame_times, strict=True) if dbfs(f) > SILENCE_DBFS]
                if loud and time.monotonic() - loud[-1] > QUIET_S:
                    break
                await asyncio.sleep(0.05)
            results.append({"voice_to_voice_ms": round(latency * 1000, 1) if latency is not None else float("nan")})
            await asyncio.sleep(0.5)
    finally:
        await caller.hang_up()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values or np.all(np.isnan(values)):
        return {"turns": len(values), "answered": 0, "p50": float("nan"), "p95": float("nan")}
    return {"turns": len(values), "answered": int(np.sum(~np.isnan(values))),
            "p50": round(float(np.nanpercentile(values, 50)), 1), "p95": round(float(np.nanpercentile(values, 95)), 1)}


def server_side(url: str, channel: str, seen: set[str]) -> dict[str, dict[str, float]]:
    """From the stored traces of this level's new conversations of ``channel``: recognition compute
    and how long recognition still ran after the end of the turn (the server's share of the wait)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    page = httpx.get(f"{url}/api/conversations", params={"limit": 200}, headers=headers, timeout=30).json()
    fresh = [c["id"] for c in page["items"] if c["channel"] == channel and c["id"] not in seen]
    seen.update(c["id"] for c in page["items"])
    voice = [t["trace"].get("voice", {}) for cid in fresh
             for t in httpx.get(f"{url}/api/conversations/{cid}", headers=headers, timeout=30).json()["turns"]]
    return {"asr_compute_ms": percentiles([float(v["asr"]["compute_ms"]) for v in voice if "asr" in v]),
            "asr_after_end_of_turn_ms": percentiles([float(v["asr"]["wait_after_end_of_turn_ms"]) for v in voice if "asr" in v])}


async def main(args: argparse.Namespace) -> dict[str, object]:
    from voicebot.pipelines.tts.router import VoiceRouter

    voices = VoiceRouter.default()
    phone_speech, webrtc_speech = [], []
    for language, text in QUESTIONS[: args.questions]:
        spoken = np.concatenate([c async for c in voices.synthesize(text, language)])
        rate = voices.sample_rate(language)
        phone_speech.append(np.concatenate([resample(spoken, rate, RATE), np.zeros(RATE // 5, dtype=np.int16)]))
        webrtc_speech.append(np.concatenate([resample(spoken, rate, OUT_RATE), np.zeros(OUT_RATE // 5, dtype=np.int16)]))
    voices.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc", "twilio"]', "VOICEBOT_CHANNELS__TWILIO__AUTH_TOKEN": AUTH_TOKEN,
           "VOICEBOT_CHANNELS__TWILIO__PUBLIC_URL": url, "VOICEBOT_CHANNELS__TWILIO__API_BASE_URL": "http://127.0.0.1:9",
           "VOICEBOT_AUTH__API_KEYS": json.dumps([{"name": "bench", "key": ADMIN_KEY, "tenant": "*", "scopes": ["transcripts:read"]}])}
    process, _ = start_server(Path(tempfile.mkdtemp()), env, port)
    report: dict[str, dict[str, object]] = {"phone": {}, "webrtc": {}}
    seen: set[str] = set()
    try:
        await phone_call(url, phone_speech[:1], [])  # warm-up of both paths
        await one_call(url, webrtc_speech[:1], [])
        server_side(url, "twilio", seen)
        for calls in [int(n) for n in args.calls.split(",")]:
            for path, channel, run, speech in (("phone", "twilio", phone_call, phone_speech), ("webrtc", "webrtc", one_call, webrtc_speech)):
                results: list[dict[str, float]] = []
                await asyncio.gather(*(run(url, speech, results) for _ in range(calls)))
                figures = percentiles([r["voice_to_voice_ms"] for r in results])
                server = server_side(url, channel, seen)
                report[path][str(calls)] = {**figures, **server}
                print(f"{path:<6} {calls} concurrent call(s), {figures['turns']} turns ({figures['answered']} answered): "
                      f"voice-to-voice p50 {figures['p50']} ms, p95 {figures['p95']} ms; server: recognition "
                      f"p50 {server['asr_compute_ms']['p50']} ms, still running after the end of turn p50 "
                      f"{server['asr_after_end_of_turn_ms']['p50']} ms", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,2", help="concurrent calls per level")
    parser.add_argument("--questions", type=int, default=3, help="questions per call")
    arguments = parser.parse_args()
    print(f"phone vs WebRTC latency on {os.cpu_count()} CPU cores (callers, server and models share them; load average "
          f"{os.getloadavg()[0]:.1f} at start); figures only", flush=True)
    print(json.dumps(asyncio.run(main(arguments))))
