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

import numpy as np
from voice_latency import QUESTIONS, free_port, one_call, start_server

from voicebot.channels.twilio.caller import SILENCE_DBFS, PhoneCaller, dbfs
from voicebot.channels.twilio.codec import RATE
from voicebot.channels.webrtc.track import OUT_RATE
from voicebot.voice.audio import resample

AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
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


def percentiles(results: list[dict[str, float]]) -> dict[str, float]:
    values = [r["voice_to_voice_ms"] for r in results]
    return {"turns": len(values), "answered": int(np.sum(~np.isnan(values))),
            "p50": round(float(np.nanpercentile(values, 50)), 1), "p95": round(float(np.nanpercentile(values, 95)), 1)}


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
           "VOICEBOT_CHANNELS__TWILIO__PUBLIC_URL": url, "VOICEBOT_CHANNELS__TWILIO__API_BASE_URL": "http://127.0.0.1:9"}
    process, _ = start_server(Path(tempfile.mkdtemp()), env, port)
    report: dict[str, dict[str, object]] = {"phone": {}, "webrtc": {}}
    try:
        await phone_call(url, phone_speech[:1], [])  # warm-up of both paths
        await one_call(url, webrtc_speech[:1], [])
        for calls in [int(n) for n in args.calls.split(",")]:
            for path, run, speech in (("phone", phone_call, phone_speech), ("webrtc", one_call, webrtc_speech)):
                results: list[dict[str, float]] = []
                await asyncio.gather(*(run(url, speech, results) for _ in range(calls)))
                figures = percentiles(results)
                report[path][str(calls)] = figures
                print(f"{path:<6} {calls} concurrent call(s), {figures['turns']} turns ({figures['answered']} answered): "
                      f"voice-to-voice p50 {figures['p50']} ms, p95 {figures['p95']} ms", flush=True)
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
