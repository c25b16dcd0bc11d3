"""Spoken-language identification: Whisper's language probabilities on the audio, the text
detector on the transcript, and the session's current language, restricted to the domain's
languages. An utterance too short to judge keeps the session language; a caller who really
switches (long enough, both sources agree) is followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicebot.config import LanguageSettings
from voicebot.core.languages import normalise_language_tag
from voicebot.pipelines.lid.text import letter_count

_DEFAULTS = LanguageSettings()


@dataclass
class SpokenLanguageDecision:
    language: str
    switched: bool
    reason: str
    scores: dict[str, Any]


def decide_spoken_language(whisper_probs: dict[str, float], text_scores: dict[str, float], text: str, duration_s: float,
                           current: str, supported: list[str], settings: LanguageSettings | None = None) -> SpokenLanguageDecision:
    """Keep or switch the call's language; the thresholds are the ``language.spoken_*`` settings
    (the defaults when ``settings`` is not given), so an operator tunes them without code."""
    settings = settings or _DEFAULTS
    audio_weight, min_audio_s = settings.spoken_audio_weight, settings.spoken_min_audio_s
    min_letters, switch_confidence = settings.spoken_min_letters, settings.spoken_switch_confidence
    audio = {normalise_language_tag(k): v for k, v in whisper_probs.items()}
    audio = {("zh" if k == "zh-tw" and "zh-tw" not in supported else k): v for k, v in audio.items()}
    combined = {lang: audio_weight * audio.get(lang, 0.0) + (1.0 - audio_weight) * text_scores.get(lang, 0.0) for lang in supported}
    total = sum(combined.values()) or 1.0
    combined = {lang: round(score / total, 4) for lang, score in sorted(combined.items(), key=lambda kv: -kv[1])}
    scores = {"combined": combined, "whisper": {k: round(v, 4) for k, v in audio.items()}, "text": text_scores}
    best = next(iter(combined), current)
    if best == current:
        return SpokenLanguageDecision(current, False, "audio and text agree with the session language", scores)
    if duration_s < min_audio_s or letter_count(text) < min_letters:
        return SpokenLanguageDecision(current, False, f"too short to judge ({duration_s:.1f} s, {letter_count(text)} letters); kept {current}", scores)
    if combined[best] >= switch_confidence:
        return SpokenLanguageDecision(best, True, f"{best} {combined[best]:.2f} >= {switch_confidence} (audio + text)", scores)
    return SpokenLanguageDecision(current, False, f"{best} {combined[best]:.2f} < {switch_confidence}; kept {current}", scores)
