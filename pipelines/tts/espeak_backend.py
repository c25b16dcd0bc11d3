"""espeak-ng voices: robotic, but available for every demo language with no model weights.

No Piper voice for German, Spanish, French or Chinese installs offline here, so these languages
speak through the system ``espeak-ng`` binary (Debian package ``espeak-ng``). One process per
sentence keeps the first sentence's latency low (it plays while the next is synthesised), and an
interrupted turn kills the running process instead of letting it finish. The binary is found at
construction, so a missing package stops start-up with an install hint rather than a caller's turn.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.sentences import split_sentences

DEFAULT_VOICES: dict[str, str] = {"en": "en-us", "de": "de", "es": "es", "fr": "fr", "zh": "cmn"}
DEFAULT_RATE_WPM = 175  # espeak-ng's own default


class EspeakNotFound(RuntimeError):
    """The espeak-ng binary is not installed (or not on PATH)."""


class EspeakError(RuntimeError):
    """espeak-ng ran but produced no usable audio (unknown voice, bad output)."""


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit mono PCM samples and the sample rate of a RIFF/WAVE byte string.

    ``espeak-ng --stdout`` writes a streaming header whose sizes are placeholders (0x7ffff...), so
    chunk sizes are clipped to the bytes actually there instead of trusted.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakError("espeak-ng output is not a WAV file")
    offset, rate, channels, bits = 12, 0, 0, 0
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        body = data[offset + 8:offset + 8 + size]
        if chunk_id == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        elif chunk_id == b"data":
            if not rate or channels != 1 or bits != 16:
                raise EspeakError(f"expected 16-bit mono PCM from espeak-ng, got {channels} channel(s), {bits} bit")
            usable = len(body) - len(body) % 2
            return np.frombuffer(body[:usable], dtype="<i2").astype(np.int16), rate
        offset += 8 + size + (size & 1)
    raise EspeakError("espeak-ng output has no audio data")


class EspeakSynthesizer:
    """Speaks through ``espeak-ng`` with a voice per language.

    ``rate_wpm`` is the speaking rate in words per minute (espeak-ng ``-s``; 80-450).
    ``synthesize(..., voice=...)`` overrides the per-language voice; the router passes the voice a
    locale names.
    """

    name = "espeak"

    class Options(BaseModel):
        """``[tts]`` (or a router engine) settings for espeak-ng."""

        model_config = ConfigDict(extra="forbid")
        voices: dict[str, str] | None = None
        rate_wpm: int = Field(DEFAULT_RATE_WPM, ge=80, le=450)
        binary: str = "espeak-ng"

    def __init__(
        self,
        voices: Mapping[str, str] | None = None,
        *,
        rate_wpm: int = DEFAULT_RATE_WPM,
        binary: str = "espeak-ng",
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise EspeakNotFound(
                f"{binary} is not installed or not on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng) "
                "or configure another TTS backend for these languages"
            )
        if not 80 <= rate_wpm <= 450:
            raise ValueError(f"rate_wpm must be between 80 and 450 words per minute, got {rate_wpm}")
        self.binary = found
        self.voices: dict[str, str] = dict(DEFAULT_VOICES if voices is None else voices)
        self.rate_wpm = rate_wpm
        self._rates: dict[str, int] = {}

    def _voice(self, language: str, voice: str | None) -> str:
        if voice:
            return voice
        code = language.lower()
        name = self.voices.get(code) or self.voices.get(code.split("-")[0])
        if name is None:
            raise EspeakError(f"no espeak-ng voice configured for language {language!r} (voices: {sorted(self.voices)})")
        return name

    def _command(self, voice: str) -> list[str]:
        # Text goes in on stdin (-b 1: as UTF-8 whatever the locale), so text starting with "-" is
        # never read as an option.
        return [self.binary, "-b", "1", "-v", voice, "-s", str(self.rate_wpm), "--stdout"]

    def supports(self, language: str) -> bool:
        code = language.lower()
        return code in self.voices or code.split("-")[0] in self.voices

    def sample_rate(self, language: str, voice: str | None = None) -> int:
        """Probed once per voice (22050 Hz for espeak-ng's own voices, 16000 Hz for mbrola ones)."""
        name = self._voice(language, voice)
        if name not in self._rates:
            done = subprocess.run(self._command(name), input=b"a", capture_output=True, timeout=30, check=False)
            self._rates[name] = self._decode(done.returncode, done.stdout, done.stderr, name)[1]
        return self._rates[name]

    def _decode(self, returncode: int | None, stdout: bytes, stderr: bytes, voice: str) -> tuple[np.ndarray, int]:
        if returncode != 0 or not stdout:
            message = stderr.decode("utf-8", "replace").strip() or f"exit status {returncode}"
            raise EspeakError(f"espeak-ng voice {voice!r}: {message}")
        return parse_wav(stdout)

    async def _speak(self, voice: str, sentence: str) -> np.ndarray:
        process = await asyncio.create_subprocess_exec(
            *self._command(voice), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await process.communicate(sentence.encode("utf-8"))
        except BaseException:  # cancelled (barge-in) or the loop is closing: leave no process behind
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
            raise
        audio, rate = self._decode(process.returncode, stdout, stderr, voice)
        self._rates.setdefault(voice, rate)
        return audio

    async def synthesize(self, text: str, language: str, voice: str | None = None) -> AsyncIterator[np.ndarray]:
        name = self._voice(language, voice)
        for sentence in split_sentences(text):
            if not sentence.strip():
                continue
            audio = await self._speak(name, sentence)
            if audio.size:
                yield audio

    def close(self) -> None:
        """Nothing is held between calls: every sentence is its own process."""
