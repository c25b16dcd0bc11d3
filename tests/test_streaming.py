"""Sentence assembly for the voice path: each sentence leaves as soon as it is complete."""

from voicebot.core.sentences import SentenceAssembler, split_sentences


def test_sentences_are_released_as_soon_as_they_end() -> None:
    assembler = SentenceAssembler()
    released: list[list[str]] = []
    for piece in ["Order 123", "45 is on", " its way.", " Expected", " delivery: ", "2026-12-03. Anything", " else?"]:
        released.append(assembler.feed(piece))
    # "way." could still be "way.com": it is a sentence once the next piece starts with a space.
    assert released[2] == [] and released[3] == ["Order 12345 is on its way."]
    assert sum(released, []) == ["Order 12345 is on its way.", "Expected delivery:", "2026-12-03."]
    assert assembler.flush() == ["Anything else?"] and assembler.flush() == []


def test_chinese_and_numbered_steps() -> None:
    assembler = SentenceAssembler()
    out = assembler.feed("订单已发货。预计") + assembler.feed("明天送达！") + assembler.feed("1. Restart\n2. Re")
    assert out == ["订单已发货。", "预计明天送达！", "1. Restart"]
    assert assembler.flush() == ["2. Re"]
    assert split_sentences("Hola. ¿Qué tal?\n1. Uno") == ["Hola.", "¿Qué tal?", "1. Uno"]
