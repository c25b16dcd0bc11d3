"""When the words so far let a turn end: sooner on a complete question, later on a number being
read out.

The speculative transcript of a pause is ready well before the default end-of-turn silence has
passed, and it says what the silence alone cannot: "What is your return policy?" is finished,
"my number is 1 2 3" and "I ordered it and" are not. The decision is deliberately narrow: only a
question (Whisper writes its question mark) of a few words, not ending in a short digit run,
ends sooner; a statement keeps the default silence, because "I ordered a jacket last week." is
as often the start of a longer turn as its end; a greeting alone ("Hi") waits like an
unfinished number, since the request follows it.
"""

from __future__ import annotations

import re
from enum import Enum

from voicebot.voice.turns import TurnTakingOptions


class Completeness(Enum):
    COMPLETE = "complete"  # a question: end after the short silence
    UNKNOWN = "unknown"  # keep the default silence
    INCOMPLETE = "incomplete"  # the caller is in the middle of something: wait longer


# Words a turn does not end on, in the languages with natural voices and the demo's others.
_CONTINUATIONS = frozenset("""
and or but so because then the a an my your our is are was were to of for with at in on from that which who
um uh erm hmm like number code is
und oder aber weil dann der die das ein eine mein meine ist sind zu von mit für
y o pero porque el la los las un una mi es son de con para que
et ou mais parce le les une mon ma est sont avec pour que
""".split())
_GREETINGS = frozenset("hi hello hey hallo hola bonjour ciao morning".split())
_MIN_QUESTION_WORDS = 3
_MIN_DIGIT_RUN = 5  # "order number 12345" is whole; "1 2 3" (so far) is a number still being read out


_DIGIT_WORDS = frozenset("zero oh one two three four five six seven eight nine".split())


def _trailing_digits(words: list[str]) -> int:
    """Digits at the end of the words, however Whisper wrote them: "12,345", "5'4. 3'2", "five four"."""
    count = 0
    for word in reversed(words):
        if word.isdigit():
            count += len(word)
        elif word in _DIGIT_WORDS:
            count += 1
        else:
            break
    return count


def completeness(text: str) -> Completeness:
    """How complete the caller's words so far look (a transcript of the utterance up to the pause)."""
    stripped = text.strip()
    if not stripped:
        return Completeness.UNKNOWN
    words = re.findall(r"[^\W_]+", stripped.lower())
    if 0 < _trailing_digits(words) < _MIN_DIGIT_RUN:
        return Completeness.INCOMPLETE
    if stripped.endswith((",", "...", "…", "-", ":")) or (words and words[-1] in _CONTINUATIONS):
        return Completeness.INCOMPLETE
    if len(words) == 1 and words[0] in _GREETINGS:
        return Completeness.INCOMPLETE  # "Hi", then the request: a greeting alone opens a turn
    if stripped.endswith("?") and len(words) >= _MIN_QUESTION_WORDS:
        return Completeness.COMPLETE
    return Completeness.UNKNOWN


def end_of_turn_silence_ms(text: str, options: TurnTakingOptions) -> tuple[int, Completeness]:
    """The silence (ms) that ends the turn after these words, and why."""
    judged = completeness(text)
    if judged is Completeness.COMPLETE:
        return min(options.complete_turn_silence_ms, options.end_of_turn_silence_ms), judged
    if judged is Completeness.INCOMPLETE:
        return max(options.incomplete_turn_silence_ms, options.end_of_turn_silence_ms), judged
    return options.end_of_turn_silence_ms, judged
