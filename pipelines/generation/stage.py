"""Pipeline stage: phrase the grounded answer with a seq2seq model, streamed, behind a guard.

The dialogue stage has already decided *what* to say (a grounded template answer with its facts);
the generator only decides *how*. Its text streams to the client as it is produced. When it is
done, the grounding guard checks language and facts: if it fails, the template answer is the
final message instead (the chat page replaces the streamed text with it) and the trace says why.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from voicebot.config import GenerationSettings, PrivacySettings
from voicebot.core.events import BotReply, BotTextChunk, Event
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.dialogue.grounding import build_prompt, check_grounding
from voicebot.pipelines.generation.masked_prompt import mask_fields
from voicebot.pipelines.generation.seq2seq import GenerationError
from voicebot.pipelines.lid.text import TextLanguageDetector
from voicebot.privacy.patterns import LocalePatterns
from voicebot.privacy.restore import PlaceholderStream, restore_placeholders, values_by_placeholder


class GenerationStage(Stage):
    name = "generation"
    consumes = (BotReply,)

    def __init__(self, generator_source: object, detector: TextLanguageDetector, settings: GenerationSettings,
                 privacy: PrivacySettings | None = None) -> None:
        # generator_source.generator is read per turn, so a hot-swapped model serves the next turn
        # while turns in flight finish on the old one.
        self.source = generator_source
        self.detector = detector
        self.settings = settings
        privacy = privacy or PrivacySettings()
        # Masked: the model sees placeholders, the guard checks its masked answer, and the
        # customer reads it with the real values put back (voicebot.privacy.restore).
        self.patterns = None if privacy.generator_sees_raw else LocalePatterns(privacy.extra_patterns)

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        generator = getattr(self.source, "generator", None)
        fields = event.prompt_fields
        if generator is None or event.path not in self.settings.paths or fields is None:
            yield event
            return
        language = event.language
        values: dict[str, list[str]] = {}
        if self.patterns is not None:
            fields, findings = mask_fields(fields, self.patterns.for_language(fields.language))
            values = values_by_placeholder(findings)
            turn.record("response", prompt_masked={placeholder: len(found) for placeholder, found in values.items()})
        stream = PlaceholderStream(values)
        started = time.perf_counter()
        pieces, result_future, cancel = generator.start_stream(build_prompt(fields), self.settings.max_new_tokens)
        index = 0
        try:
            async for piece in pieces:
                shown = stream.feed(piece) if values else piece
                if shown:
                    yield BotTextChunk(session_id=event.session_id, turn_id=event.turn_id, text=shown, index=index, language=language)
                    index += 1
            if values and (rest := stream.flush()):
                yield BotTextChunk(session_id=event.session_id, turn_id=event.turn_id, text=rest, index=index, language=language)
                index += 1
            result = await result_future
        except GenerationError as exc:
            turn.record("response", generator=generator.model_name, used="template",
                        guard={"passed": False, "reasons": [f"generation failed: {exc}"]})
            # Pieces already out are replaced by the template answer (streamed: no second copy of it).
            yield replace(event, streamed=index > 0, generated_rejected=index > 0, ts=time.monotonic())
            return
        finally:
            cancel.set()  # a cancelled turn (barge-in, closed chat) leaves the batch at once
        verdict = check_grounding(result.text, fields, self.detector)
        if invented := stream.unknown(result.text) if self.patterns is not None else []:
            verdict.passed = False
            verdict.reasons.append("placeholders the prompt did not have: " + ", ".join(invented))
        turn.record(
            "response",
            generator=generator.model_name, precision=generator.precision, generated_text=result.text, guard=verdict.to_dict(),
            used="generator" if verdict.passed else "template", tokens=result.tokens, batch_size=result.batch_size,
            queued_ms=result.queued_ms, generate_ms=result.generate_ms, wall_ms=round((time.perf_counter() - started) * 1000, 3),
            note="generated, grounded" if verdict.passed else "generated text failed the grounding guard: template answer used",
        )
        text = restore_placeholders(result.text, values) if verdict.passed else event.text
        yield replace(event, text=text, streamed=True, generated_rejected=not verdict.passed, ts=time.monotonic())
