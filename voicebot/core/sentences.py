"""Sentence boundaries for streamed text: chat shows pieces at once, speech needs whole sentences.

The voice path hands each sentence to TTS as soon as it is complete, so the first sentence is
spoken while the generator is still writing the next one.
"""

from __future__ import annotations

import re

# Sentence ends in the five demo scripts, plus line breaks (numbered troubleshooting steps).
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])|\n+")
# "1." on its own numbers a step ("1. Restart the router"): it belongs to what follows.
_STEP_NUMBER = re.compile(r"^\d{1,2}[.)]$")


def _join_step_numbers(parts: list[str]) -> tuple[list[str], str]:
    """Sentences, with a dangling step number carried into the next part (returned separately)."""
    sentences: list[str] = []
    carry = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if _STEP_NUMBER.match(part):
            carry = f"{carry}{part} "
            continue
        sentences.append(carry + part)
        carry = ""
    return sentences, carry


def split_sentences(text: str) -> list[str]:
    sentences, carry = _join_step_numbers(_SENTENCE_END.split(text))
    if carry:
        sentences.append(carry.strip())
    return sentences or [text]


def reply_sentences(text: str, language: str, notice: str | None = None, notice_language: str | None = None) -> list[tuple[str, str]]:
    """A reply's sentences, each with the language it is spoken in: a notice that opens the reply
    (which languages the bot answers in) is in its own language."""
    parts = [(text, language)]
    if notice and notice_language and text.startswith(notice):
        parts = [(notice, notice_language), (text[len(notice):], language)]
    return [(sentence, part_language) for part, part_language in parts for sentence in split_sentences(part)]


def first_clause_split(sentence: str, min_words: int = 3) -> list[str]:
    """A sentence cut after its first clause (a comma or semicolon with at least ``min_words``
    words on either side), so its first words can be synthesised alone; else the sentence."""
    for index, char in enumerate(sentence):
        if char in ",;" and index + 1 < len(sentence) and sentence[index + 1] == " ":
            head, tail = sentence[: index + 1].strip(), sentence[index + 1:].strip()
            if len(head.split()) >= min_words and len(tail.split()) >= min_words:
                return [head, tail]
            if len(head.split()) >= min_words:
                break
    return [sentence]


class SentenceAssembler:
    """Collects streamed pieces and releases complete sentences in order."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, piece: str) -> list[str]:
        self._buffer += piece
        parts = _SENTENCE_END.split(self._buffer)
        # The last part may still be growing; everything before it ended with a boundary.
        sentences, carry = _join_step_numbers(parts[:-1])
        self._buffer = carry + parts[-1]
        return sentences

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []
