"""When the words so far let a turn end: sooner on a complete question, later on a number being
read out.

The speculative transcript of a pause is ready well before the default end-of-turn silence has
passed, and it says what the silence alone cannot: "What is your return policy?" is finished,
"my number is 1 2 3" and "I ordered it and" are not. The decision is deliberately narrow: only a
question of a few words, not ending in a short digit run, ends sooner. A question is what Whisper
writes with its question mark, or a last sentence worded as one ("Hi where is my order number
12,345." starts with "where is": Whisper often ends an unhurried question with a full stop, and
that question then waited the statement's silence). A statement keeps the default silence,
because "I ordered a jacket last week." is as often the start of a longer turn as its end; a
greeting alone ("Hi") waits like an unfinished number, since the request follows it.
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
# How a question opens, after any greeting or filler, in the languages with natural voices and the
# demo's others. A verb first ("can you", "is it", "kann ich", "pouvez-vous") asks; so does a question
# word, except that English "when", "where", "how", "what" also open statements ("When I log in it
# fails."), so those count only when a verb follows soon and a subject pronoun does not come first.
# Spanish is left to its "¿"; its unaccented "cuando", "como", "que" are conjunctions.
# French: the verb of "est-ce que", "pouvez-vous", "puis-je" (a hyphenated word counts by its first part).
_VERB_FIRST = frozenset("""
can could would will do does did is are am was were have has may shall should
kann können könnten ist sind haben hat gibt
est pouvez puis avez
""".split())
_QUESTION_WORDS = frozenset("""
wo was wann warum wieso wie wer welche welcher welches
où pourquoi comment qui quel quelle quels quelles combien
dónde qué cuándo cómo quién cuál cuánto
""".split())
_ENGLISH_QUESTION_WORDS = frozenset("what where when why how who which whose".split())
_ENGLISH_VERBS = _VERB_FIRST | {"s", "re"}  # "where's", "what're"
_SUBJECT_PRONOUNS = frozenset("i you we they he she it".split())
_OPENING_FILLERS = frozenset("hi hello hey hallo hola bonjour ciao morning okay ok so um uh yes and also please excuse me".split())
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
    # "Can you check where it is?" ends on "is", but its question mark says it is asked
    trails_off = bool(words) and words[-1] in _CONTINUATIONS and not stripped.endswith("?")
    if stripped.endswith((",", "...", "…", "-", ":")) or trails_off:
        return Completeness.INCOMPLETE
    if len(words) == 1 and words[0] in _GREETINGS:
        return Completeness.INCOMPLETE  # "Hi", then the request: a greeting alone opens a turn
    if stripped.endswith("?") and len(words) >= _MIN_QUESTION_WORDS:
        return Completeness.COMPLETE
    if stripped.endswith(".") and _worded_as_question(stripped):
        return Completeness.COMPLETE
    return Completeness.UNKNOWN


def _worded_as_question(text: str) -> bool:
    """Whether the last sentence opens as a question does, whatever punctuation Whisper gave it."""
    last_sentence = re.split(r"(?<=[.?!])\s+", text)[-1]
    if last_sentence.startswith("¿"):
        return True
    words = re.findall(r"[^\W_]+(?:-[^\W_]+)*", last_sentence.lower())
    while words and words[0] in _OPENING_FILLERS:
        words = words[1:]
    if len(words) < _MIN_QUESTION_WORDS:
        return False
    first, following = words[0].split("-")[0], words[1:4]
    if first in _ENGLISH_QUESTION_WORDS:
        return following[0] not in _SUBJECT_PRONOUNS and any(word in _ENGLISH_VERBS for word in following)
    return first in _VERB_FIRST or first in _QUESTION_WORDS


def end_of_turn_silence_ms(text: str, options: TurnTakingOptions) -> tuple[int, Completeness]:
    """The silence (ms) that ends the turn after these words, and why."""
    judged = completeness(text)
    if judged is Completeness.COMPLETE:
        return min(options.complete_turn_silence_ms, options.end_of_turn_silence_ms), judged
    if judged is Completeness.INCOMPLETE:
        return max(options.incomplete_turn_silence_ms, options.end_of_turn_silence_ms), judged
    return options.end_of_turn_silence_ms, judged
