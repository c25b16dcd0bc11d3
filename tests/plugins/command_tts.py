"""An integrator's own text-to-speech engine, outside the core: any command that writes a WAV.

Loaded by config alone (``[tts] backend = "command_tts:CommandSynthesizer"``), or as one engine of
the locale router (``[tts.engines.mine] backend = "command_tts:CommandSynthesizer"``). The default
command is espeak-ng; ``pico2wave``, macOS ``say`` or a vendor's CLI fit the same shape. It meets
the contract in voicebot/pipelines/tts/base.py: int16 mono chunks, a sentence at a time, produced
off the event loop, stopped at once when the caller stops listening (barge-in).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator

import numpy as np
import soxr
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.sentences import split_sentences


class CommandSynthesizer:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        command: list[str] = Field(default_factory=lambda: ["espeak-ng", "--stdout", "-v", "{voice}", "{text}"],
                                   description="argv; {text} and {voice} are filled in; must write a WAV to stdout")
        voices: dict[str, str] = Field(default_factory=lambda: {"en": "en-us", "de": "de", "es": "es", "fr": "fr"},
                                       description="{language: voice name the command understands}")
        sample_rate: int = Field(22_050, ge=8000, description="the rate this backend yields (the command's output is resampled to it)")

    name = "command"

    def __init__(self, command: list[str], voices: dict[str, str], sample_rate: int) -> None:
        if shutil.which(command[0]) is None:
            raise FileNotFoundError(f"{command[0]} is not installed or not on PATH")
        self.command, self.voices, self.rate = command, voices, sample_rate

    def sample_rate(self, language: str) -> int:
        return self.rate

    def supports(self, language: str) -> bool:
        return language.split("-")[0] in self.voices

    async def synthesize(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        voice = self.voices[language.split("-")[0]]
        for sentence in split_sentences(text) or [text]:
            argv = [part.replace("{text}", sentence).replace("{voice}", voice) for part in self.command]
            process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            try:
                wav, _ = await process.communicate()
            finally:
                if process.returncode is None:  # cancelled (barge-in): stop the engine now
                    process.kill()
                    await process.wait()
            if process.returncode != 0:
                raise RuntimeError(f"{argv[0]} failed with exit code {process.returncode}")
            yield await asyncio.to_thread(self._decode, wav)

    def _decode(self, wav: bytes) -> np.ndarray:
        """PCM of a WAV whose sizes may be unset (a pipe cannot seek back to write them)."""
        fmt = wav.index(b"fmt ")
        channels, rate = struct.unpack("<HI", wav[fmt + 10:fmt + 16])
        data = wav.index(b"data") + 8
        samples = np.frombuffer(wav[data:len(wav) - (len(wav) - data) % 2], dtype=np.int16).reshape(-1, channels).mean(axis=1)
        if rate != self.rate:
            samples = soxr.resample(samples.astype(np.float32), rate, self.rate)
        return np.clip(samples, -32768, 32767).astype(np.int16)

    def close(self) -> None:
        pass
