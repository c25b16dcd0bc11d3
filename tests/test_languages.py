"""One language-tag normaliser for every part; spoken-language ID thresholds from settings."""

from __future__ import annotations

import pytest

from voicebot.config import LanguageSettings, Settings
from voicebot.core.languages import normalise_language_tag
from voicebot.dialogue.locales import Locales
from voicebot.pipelines.asr.batched import whisper_code
from voicebot.pipelines.lid.spoken import decide_spoken_language
from voicebot.privacy.patterns import LocalePatterns


@pytest.mark.parametrize(("tag", "expected"), [
    ("en", "en"), ("EN", "en"), (" en-US ", "en-us"), ("de_AT", "de-at"), ("pt-BR", "pt-br"), ("", ""), ("*", "*"),
    ("zh", "zh"), ("zh-CN", "zh"), ("zh_cn", "zh"), ("zh-Hans", "zh"), ("zh-SG", "zh"), ("zh-Hans-CN", "zh"),
    ("zh-TW", "zh-tw"), ("zh_TW", "zh-tw"), ("zh-HK", "zh-tw"), ("zh-Hant", "zh-tw"), ("zh-hant-tw", "zh-tw"), ("zh-MO", "zh-tw"),
])
def test_tags_are_normalised_one_way(tag: str, expected: str) -> None:
    assert normalise_language_tag(tag) == expected
    assert normalise_language_tag(expected) == expected  # idempotent


def test_every_part_agrees_on_what_a_tag_means() -> None:
    # Whisper knows one Chinese and no regions.
    assert [whisper_code(c) for c in ("zh_TW", "zh-Hant", " ZH-cn", "en_US", "iw")] == ["zh", "zh", "zh", "en", "he"]
    # Privacy patterns: configured and asked-for tags are spelled the same way.
    patterns = LocalePatterns({"zh_TW": {"id_card": r"[A-Z]\d{9}"}, "DE": {"kunde": r"KD-\d{6}"}})
    assert "id_card" in patterns.for_language("zh-Hant") and "id_card" in patterns.for_language("zh-HK")
    assert "id_card" not in patterns.for_language("zh-CN")
    assert "kunde" in patterns.for_language("de_AT") and "kunde" in patterns.for_language(" DE ")
    # Locale fallback chains start from the normalised tag.
    locales = Locales()
    assert locales.chain("zh_TW") == locales.chain("zh-Hant") == ["zh-tw", "zh", "en"]
    assert locales.chain("zh-Hans-CN") == ["zh", "en"] and locales.chain("de_AT") == ["de-at", "de", "en"]


LANGUAGES = ["en", "de", "es", "fr", "zh"]
# German audio and transcript, clearly but not overwhelmingly: combined de 0.72 with the defaults.
GERMAN = ({"de": 0.8, "en": 0.2}, {"de": 0.6, "en": 0.4}, "Ich habe mein Passwort vergessen", 2.0)


def test_spoken_defaults_are_the_settings_defaults() -> None:
    defaults = LanguageSettings()
    assert (defaults.spoken_switch_confidence, defaults.spoken_min_audio_s, defaults.spoken_min_letters,
            defaults.spoken_audio_weight) == (0.7, 1.0, 8, 0.6)
    whisper, text_scores, text, duration = GERMAN
    without = decide_spoken_language(whisper, text_scores, text, duration, "en", LANGUAGES)
    assert without == decide_spoken_language(whisper, text_scores, text, duration, "en", LANGUAGES, defaults)
    assert without.switched and without.language == "de" and without.scores["combined"]["de"] == 0.72


@pytest.mark.parametrize(("setting", "value"), [
    ("spoken_switch_confidence", 0.8),  # 0.72 is no longer enough
    ("spoken_min_audio_s", 2.5),        # the 2 s utterance is now too short to judge
    ("spoken_min_letters", 40),         # so is its transcript
    ("spoken_audio_weight", 0.0),       # the transcript alone (de 0.6) is not enough
])
def test_a_changed_setting_changes_the_spoken_decision(setting: str, value: float) -> None:
    whisper, text_scores, text, duration = GERMAN
    settings = Settings(language={setting: value}).language  # as an operator configures it: [language] in the config
    decision = decide_spoken_language(whisper, text_scores, text, duration, "en", LANGUAGES, settings)
    assert not decision.switched and decision.language == "en", decision.reason
    assert decide_spoken_language(whisper, text_scores, text, duration, "en", LANGUAGES).switched


def test_a_lower_threshold_follows_a_less_certain_caller() -> None:
    unsure = ({"de": 0.55, "en": 0.45}, {"de": 0.55, "en": 0.45}, "Das ist eine Frage zum Versand", 2.0)
    assert not decide_spoken_language(*unsure, "en", LANGUAGES).switched
    decision = decide_spoken_language(*unsure, "en", LANGUAGES, LanguageSettings(spoken_switch_confidence=0.5))
    assert decision.switched and decision.language == "de" and ">= 0.5" in decision.reason


def test_spoken_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="spoken_switch_confidence"):
        LanguageSettings(spoken_switch_confidence=1.5)
