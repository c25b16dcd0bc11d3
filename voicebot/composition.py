"""Which stages a text turn runs through: the one place that names them all.

The runtime (voicebot.core) only runs stages; this list composes the built-in ones. Pass your own
factory as ``BotRuntime(settings, text_stages=...)`` to add or replace a stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicebot.agents.stage import HandoffStage
from voicebot.core.pipeline import Stage
from voicebot.core.stages import ResponseStreamStage
from voicebot.dialogue.stage import DialogueStage
from voicebot.pipelines.generation.stage import GenerationStage
from voicebot.pipelines.lid.stage import TextLanguageStage
from voicebot.pipelines.nlu.stage import NluStage
from voicebot.storage.stage import PersistStage

if TYPE_CHECKING:
    from voicebot.core.runtime import BotRuntime
    from voicebot.dialogue.engine import DialogueEngine


def text_stages(runtime: BotRuntime, engine: DialogueEngine) -> list[Stage]:
    generation = runtime.settings.generation
    return [
        TextLanguageStage(engine),
        NluStage(engine),
        DialogueStage(engine, runtime if generation.state_tracking else None),
        HandoffStage(runtime.agents),
        GenerationStage(runtime, engine.detector, generation, runtime.settings.privacy),
        ResponseStreamStage(),
        PersistStage(runtime.storage),
    ]
