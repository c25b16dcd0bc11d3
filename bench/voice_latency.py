"""Voice-to-voice latency over many calls, measured at a WebRTC caller on loopback, hop by hop.

Voice-to-voice: from the caller's last voiced frame sent to the first bot frame received above
-40 dBFS. The server's ``turn_latency`` event splits it, with CLOCK_MONOTONIC marks the caller
shares on this machine:

    transport_in        caller's last voiced frame sent -> that frame (above -40 dBFS) processed by
                        the endpointer (RTP on loopback, aiortc's jitter buffer: 4 packets = 80 ms
                        of prefetch, Opus decode, resample)
    vad_hangover        -> the last frame the VAD still calls speech
    endpointing         -> end of turn decided (the end-of-turn silence; shorter after a complete
                        question, longer while a number is read out)
    asr_after_end       -> transcript ready (0 when the speculative recognition was reused)
    dialogue            -> first reply text (language ID, NLU, policy, storage)
    tts_first_chunk     -> first synthesised chunk (the first clause), leading silence trimmed
    to_first_frame_out  -> that audio handed to the outbound track (its 20 ms pacing)
    transport_out       -> first loud frame at the caller (Opus encode, RTP, jitter buffer)

and the recognition's cost in CPU time, which holds on a loaded machine where wall time does
not: the final recognition's thread and process CPU, how long it queued behind other work, and
the speculative recognitions started, withdrawn (still queued) and discarded (already run) per
turn. Question sets: ``plain`` (short questions), ``pauses`` (0.3 s and 0.5 s pauses mid-sentence,
longer questions with commas): a turn that gets more than one reply is counted. Figures only.

    python bench/voice_latency.py --calls 1,2 --questions 5 --set plain,pauses
    python bench/voice_latency.py --set plain --variant baseline: --variant w15:VOICEBOT_ASR__ENCODER_WINDOW_S=15
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
from typing import Any

import httpx
import numpy as np

from voicebot.channels.webrtc.caller import Caller
from voicebot.channels.webrtc.track import OUT_RATE
from voicebot.voice.audio import resample

# A question is its parts: text spoken by Piper, or a float (seconds of silence inserted).
Question = list[str | float]
SETS: dict[str, list[Question]] = {
    "plain": [
        ["What is your return policy?"],
        ["Hi where is my order number 12345?"],
        ["What payment methods do you accept?"],
        ["How long does shipping take?"],
        ["I forgot my password."],
    ],
    "pauses": [
        ["Hi,", 0.3, "where is my order number 12345?"],
        ["Hi,", 0.5, "what is your refund policy?"],
        ["I ordered a blue jacket last week,", 0.3, "and it still has not arrived,", 0.3, "can you check where it is?"],
        ["Hello,", 0.4, "I would like to know,", 0.5, "what payment methods do you accept?"],
        ["My order number is", 0.5, "5 4 3 2 1,", 0.3, "where is it?"],
        ["Where is my order?", 0.3, "The number is 5 4 3 2 1."],  # a complete question, then more: one reply to both
    ],
    "sentences": [  # complete questions followed by more after a 0.3 s pause (the complete-question silence against it)
        ["Where is my order?", 0.3, "The number is 5 4 3 2 1."],
        ["Can you help me?", 0.3, "My parcel never came."],
        # a question's words before a 0.3 s pause, its end after it (Whisper may end the first part with ".")
        ["Where is my order", 0.3, "with the number 12345?"],
        ["How long does shipping take", 0.3, "to Germany?"],
        ["Can you check my order", 0.3, "it is number 12345."],
    ],
    "ids": [  # a whole order id, then more after a pause (the id's own shorter silence against it)
        ["My order number is 12345", 0.3, "and it still has not arrived."],
        ["It is order 12345,", 0.5, "can you check where it is?"],
        ["My order number is 12345,", 0.5, "and I would like to cancel it."],
    ],
}


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


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")


def turn_figures(ended: float, latency: float | None, heard_at: float | None, message: dict[str, Any],
                 turn_latency: dict[str, Any] | None, replies: int) -> dict[str, float]:
    """One turn's figures from the caller's clock and the server's events."""
    voice = message.get("trace", {}).get("voice", {})
    asr = voice.get("asr", {})
    figures = {"voice_to_voice_ms": latency * 1000 if latency is not None else float("nan"), "replies": float(replies),
               "asr_compute_ms": _number(asr.get("compute_ms")), "asr_speculative_reused": float(bool(asr.get("speculative")))}
    if turn_latency is None:  # a server without turn_latency events: what its trace says
        figures["asr_after_end_ms"] = _number(asr.get("wait_after_end_of_turn_ms"))
        return figures
    marks, hops, details = turn_latency["marks"], turn_latency["hops_ms"], turn_latency["details"]
    trace_asr = details.get("asr", {})
    figures.update({
        "transport_in_ms": (marks["sound_seen"] - ended) * 1000 if "sound_seen" in marks else float("nan"),
        "vad_hangover_ms": _number(hops.get("vad_hangover")),
        "endpointing_ms": _number(hops.get("endpointing")),
        "asr_after_end_ms": _number(hops.get("asr_after_end_of_turn")),
        "dialogue_ms": _number(hops.get("dialogue")),
        "tts_first_chunk_ms": _number(hops.get("tts_first_chunk")),
        "to_first_frame_out_ms": _number(hops.get("to_first_frame_out")),
        "transport_out_ms": (heard_at - marks["first_frame_out"]) * 1000 if heard_at and "first_frame_out" in marks else float("nan"),
        "leading_silence_trimmed_ms": _number(details.get("leading_silence_trimmed_ms")),
        "inbound_resample_ms_per_frame": _number(details.get("inbound_per_frame", {}).get("resample_ms")),
        "inbound_vad_ms_per_frame": _number(details.get("inbound_per_frame", {}).get("vad_ms")),
        "asr_queued_ms": _number(trace_asr.get("queued_ms")),
        "asr_model_ms": _number(trace_asr.get("model_ms")),
        "asr_thread_cpu_ms": _number(trace_asr.get("thread_cpu_ms")),
        "asr_process_cpu_ms": _number(trace_asr.get("process_cpu_ms")),
        "speculative_started": _number(trace_asr.get("speculative_started")),
        "speculative_withdrawn": _number(trace_asr.get("speculative_withdrawn")),
        "speculative_discarded": _number(trace_asr.get("speculative_discarded")),
        "discarded_process_cpu_ms": _number(trace_asr.get("discarded_process_cpu_ms")),
        "end_of_turn_silence_ms": _number(details.get("endpointing", {}).get("end_of_turn_silence_ms")),
        # 1: the reply's first clause was synthesised during the pause (voicebot.voice.preemptive)
        "first_clause_prepared": float(bool(details.get("first_clause_prepared"))),
    })
    return figures


async def ask(caller: Caller, label: str, audio: np.ndarray, settle_s: float) -> dict[str, Any]:
    """Say one question on an open call; its figures once the answer (and any second one) is over."""
    events = caller.recording.events
    before = {kind: len([e for e in events if e["type"] == kind]) for kind in ("bot_message", "turn_latency", "user_transcript")}
    ended = await caller.say(audio)
    message = (await caller.wait_for("bot_message", count=before["bot_message"] + 1, timeout=120))[before["bot_message"]]
    await caller.wait_quiet(120)
    await asyncio.sleep(settle_s)  # a second reply, had a pause cut the turn, would come by now
    await caller.wait_quiet(120)
    latency = caller.latency_after(ended)
    heard_at = ended + latency if latency is not None else None
    latencies = [e for e in events if e["type"] == "turn_latency" and e.get("turn_id") == message["turn_id"]]
    replies = len([e for e in events if e["type"] == "bot_message"]) - before["bot_message"]
    figures = turn_figures(ended, latency, heard_at, message, latencies[0] if latencies else None, replies)
    heard = [e["text"] for e in events if e["type"] == "user_transcript"][before["user_transcript"]:]
    return {"question": label, "heard": heard, "reply": message["text"], **figures}


async def open_call(url: str) -> Caller:
    caller = Caller(url, "en", loopback_only=True)
    await caller.connect()
    await caller.wait_for("session", timeout=30)
    return caller


async def one_call(url: str, speech: list[tuple[str, np.ndarray]], results: list[dict[str, Any]], settle_s: float) -> None:
    caller = await open_call(url)
    try:
        for label, audio in speech:
            results.append(await ask(caller, label, audio, settle_s))
    finally:
        await caller.hang_up()


async def synthesise(sets: list[str], questions: int) -> list[tuple[str, np.ndarray]]:
    from voicebot.pipelines.tts.router import VoiceRouter

    voices = VoiceRouter.default()
    speech = []
    try:
        for name in sets:
            for parts in SETS[name][:questions]:
                audio = []
                for part in parts:
                    if isinstance(part, float):
                        audio.append(np.zeros(int(OUT_RATE * part), dtype=np.int16))
                    else:
                        chunks = [c async for c in voices.synthesize(part, "en")]
                        audio.append(resample(np.concatenate(chunks), voices.sample_rate("en"), OUT_RATE))
                label = " ".join(f"[{p} s]" if isinstance(p, float) else p for p in parts)
                speech.append((label, np.concatenate([*audio, np.zeros(OUT_RATE // 5, dtype=np.int16)])))
    finally:
        voices.close()
    return speech


def percentiles(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = [key for key, value in results[0].items() if isinstance(value, float)]
    out = {}
    for key in keys:
        values = np.array([r.get(key, float("nan")) for r in results], dtype=float)
        if np.isnan(values).all():
            continue
        out[key] = {"p50": round(float(np.nanpercentile(values, 50)), 1), "p95": round(float(np.nanpercentile(values, 95)), 1)}
    return out


def print_level(title: str, results: list[dict[str, Any]], verbose: bool) -> dict[str, Any]:
    figures = percentiles(results)
    extra_replies = sum(int(r["replies"]) - 1 for r in results)
    v2v = figures["voice_to_voice_ms"]
    print(f"{title}, {len(results)} turns: voice-to-voice p50 {v2v['p50']} ms, p95 {v2v['p95']} ms; "
          f"turns answered more than once: {extra_replies}", flush=True)
    for key, value in figures.items():
        if key != "voice_to_voice_ms":
            print(f"    {key:<32} p50 {value['p50']:>8} p95 {value['p95']:>8}")
    if verbose:
        for r in results:
            print(f"      {r['voice_to_voice_ms']:7.0f} ms  silence {r.get('end_of_turn_silence_ms', float('nan')):4.0f} ms  "
                  f"{'prepared ' if r.get('first_clause_prepared') else ''}{r['question']!r} -> heard {r['heard']}")
    return {"turns": len(results), "turns_with_more_than_one_reply": extra_replies, **figures}


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """'name:ENV=value;ENV=value' -> {name: {ENV: value}}; 'baseline' (no settings) is the server as configured."""
    variants: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, settings = spec.partition(":")
        variants[name] = dict(item.split("=", 1) for item in settings.split(";") if item)
    return variants


async def compare(args: argparse.Namespace, speech: list[tuple[str, np.ndarray]]) -> dict[str, object]:
    """One server per variant, all up at once (an idle one costs nothing), each question asked of
    every variant in turn, the order alternating: a load change on a shared machine hits all alike."""
    variants = parse_variants(args.variant)
    servers = {name: start_server(Path(tempfile.mkdtemp()), env) for name, env in variants.items()}
    report: dict[str, object] = {"load_average_before": os.getloadavg(), "variants": {}}
    callers: dict[str, Caller] = {}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        for name, (_, url) in servers.items():
            await one_call(url, speech[:1], [], 0.0)  # warm-up
            callers[name] = await open_call(url)
        names = list(variants)
        for round_index in range(args.rounds):
            for index, (label, audio) in enumerate(speech):
                order = names if (round_index * len(speech) + index) % 2 == 0 else names[::-1]
                for name in order:
                    results[name].append(await ask(callers[name], label, audio, args.settle))
        for name in names:
            report["variants"][name] = {"settings": variants[name], **print_level(f"variant {name} {variants[name]}", results[name], args.verbose)}  # type: ignore[index]
    finally:
        for caller in callers.values():
            await caller.hang_up()
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            process.wait(timeout=30)
    report["load_average_after"] = os.getloadavg()
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    return report


async def main(args: argparse.Namespace) -> dict[str, object]:
    speech = await synthesise(args.set.split(","), args.questions)
    if args.variant:
        return await compare(args, speech)
    data_dir = Path(tempfile.mkdtemp())
    process, url = start_server(data_dir)
    report: dict[str, object] = {"load_average_before": os.getloadavg(), "levels": {}}
    try:
        await one_call(url, speech[:1], [], 0.0)  # warm-up
        for calls in [int(n) for n in args.calls.split(",")]:
            results: list[dict[str, Any]] = []
            await asyncio.gather(*(one_call(url, speech, results, args.settle) for _ in range(calls)))
            report["levels"][calls] = print_level(f"{calls} concurrent call(s)", results, args.verbose)  # type: ignore[index]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    report["load_average_after"] = os.getloadavg()
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    return report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,2", help="concurrent calls per level")
    parser.add_argument("--questions", type=int, default=5, help="questions per set and call")
    parser.add_argument("--set", default="plain,pauses", help=f"question sets, comma-separated: {', '.join(SETS)}")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds of quiet after each answer (a second reply would show)")
    parser.add_argument("--verbose", action="store_true", help="one line per turn")
    parser.add_argument("--variant", action="append", default=[], help="compare server variants instead of concurrency levels, "
                        "interleaved question by question: 'name:ENV=value;ENV=value' (repeat; 'baseline:' for the defaults)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the questions per variant (with --variant)")
    arguments = parser.parse_args()
    print(f"voice latency benchmark on {os.cpu_count()} CPU cores (caller, server and models share them), "
          f"load average {os.getloadavg()[0]:.1f}; figures only", flush=True)
    print(json.dumps(asyncio.run(main(arguments))))
