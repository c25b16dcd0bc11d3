"""The dialogue engine: one object per process, shared by every session.

It holds the trained models and the domain; all per-session data lives in the DialogueState the
caller passes in, so one engine serves any number of concurrent sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voicebot.config import LanguageSettings, NluSettings
from voicebot.core.batching import Batcher, BatchItem
from voicebot.core.languages import normalise_language_tag
from voicebot.core.session import DialogueState, HistoryEntry
from voicebot.dialogue.actions import ActionRunner, open_domain_database
from voicebot.dialogue.domain import Domain, load_domain
from voicebot.dialogue.grounding import PromptFields
from voicebot.dialogue.knowledge import KnowledgeBase
from voicebot.dialogue.locales import Locales
from voicebot.dialogue.nlu import domain_examples, load_or_train
from voicebot.dialogue.policy import Decision, Policy
from voicebot.dialogue.semantic import EnumMatcher
from voicebot.dialogue.sentiment import LexiconSentiment
from voicebot.dialogue.tracker import Understood, update_state
from voicebot.pipelines.lid.text import TextLanguageDetector, letter_count
from voicebot.pipelines.nlu.entities import EntityExtractor
from voicebot.pipelines.nlu.oos import DEFAULT_THRESHOLD, is_out_of_scope

log = logging.getLogger(__name__)

_CLAUSE = re.compile(r"[,.!?;，。！？；、]+")

if TYPE_CHECKING:
    from voicebot.core.registry import Registry


@dataclass
class LanguageDecision:
    language: str
    switched: bool
    reason: str
    scores: dict[str, dict[str, float]]

    def to_trace(self) -> dict[str, Any]:
        return {"chosen": self.language, "switched": self.switched, "reason": self.reason, **self.scores}


class DialogueEngine:
    def __init__(self, domain: Domain, nlu: NluSettings, language: LanguageSettings, data_dir: Path, locales: Locales | None = None,
                 registry: Registry | None = None) -> None:
        self.domain = domain
        self.nlu_settings = nlu
        self.language_settings = language
        self.locales = locales or Locales()
        self.extractor = EntityExtractor(domain.spec)
        examples = domain_examples(domain, self.extractor)
        self.classifier, self.nlu_model_info = load_or_train(domain, self.extractor, data_dir / "models", nlu, registry)
        # The operator's threshold when set, else the backend's own, fitted on held-out data.
        self.oos_threshold = nlu.oos_threshold if nlu.oos_threshold is not None else float(getattr(self.classifier, "oos_threshold", DEFAULT_THRESHOLD))
        # A conversation may be held in any language with framework messages; the domain answers
        # in the languages it has responses in, and says so in the others (answer_languages).
        self.conversation_languages = list(dict.fromkeys([*domain.languages, *self.locales.codes()]))
        self.detector = TextLanguageDetector(self.conversation_languages, seed=language.detector_seed)
        self.detector.fit_domain([e.text for e in examples], [e.language for e in examples])
        # A classifier on a sentence encoder lends its vectors to the knowledge base and the enum
        # slots; the texts of every session are encoded in shared batches.
        self.embed = getattr(self.classifier, "embed", None)
        self.encode_batcher: Batcher[str, Any] | None = (
            Batcher(self._encode_batch, max_batch=64, max_wait_s=0.0, name="encode") if self.embed is not None else None)
        self.kb = KnowledgeBase(domain, embed=self.embed)
        self.enums = EnumMatcher(domain.spec, self.embed) if self.embed is not None else None
        self.sentiment = LexiconSentiment(self.locales)
        self.actions = ActionRunner(domain, open_domain_database(domain, data_dir))
        self.policy = Policy(domain, self.locales, self.kb, self.actions, nlu.clarify_margin,
                             embed_query=self.encode_batcher.submit if self.encode_batcher is not None else None)
        # One call per batch instead of per message: scikit-learn's per-call overhead dominates
        # the work on a short text, so batching across sessions multiplies throughput.
        self.language_batcher: Batcher[str, dict[str, float]] = Batcher(self._language_batch, max_batch=64, max_wait_s=0.0, name="language")
        self.nlu_batcher: Batcher[str, list[tuple[str, float]]] = Batcher(self._nlu_batch, max_batch=64, max_wait_s=0.0, name="nlu")
        self._warm_up()

    def _warm_up(self) -> None:
        """First calls into the models are slow (lazy init); pay that at start, not in a turn."""
        for language in self.domain.languages:
            sample = next(iter(self.domain.examples.get(language, {}).values()), ["hello"])[0]
            self.understand(sample, language)
            self.identify_language(sample, self.new_state(language))
            self.detector.scores(sample)  # langdetect loads its profiles on first use
            self.kb.search(sample, language)

    @classmethod
    def from_folder(cls, folder: Path, nlu: NluSettings, language: LanguageSettings, data_dir: Path,
                    registry: Registry | None = None) -> DialogueEngine:
        domain, problems = load_domain(folder)
        for problem in problems:
            log.warning("%s", problem)
        assert domain is not None
        return cls(domain, nlu, language, data_dir, registry=registry)

    def new_state(self, language: str | None = None, identity: Mapping[str, Any] | None = None) -> DialogueState:
        """A fresh conversation; ``identity`` is a customer the integrator's backend already verified
        (e.g. the ``customer`` claim of a signed session token: {"email": ..., "phone": ...})."""
        state = DialogueState(language=self.supported_language(language) or self.domain.spec.default_language)
        state.identity = self.identity_values(identity)
        return state

    def identity_values(self, identity: Mapping[str, Any] | None) -> dict[str, str] | None:
        """Keep the identity's values for slots a flow identifies with, normalised like user input.

        The check action then compares them exactly as it compares what a customer types.
        """
        if not identity:
            return None
        usable = {slot for flow in self.domain.spec.flows.values() if flow.identify for slot in flow.identify.any_of}
        values: dict[str, str] = {}
        for slot, raw in identity.items():
            if slot not in usable or not isinstance(raw, str | int) or not str(raw).strip():
                continue
            found = [e for e in self.extractor.extract(str(raw), self.domain.spec.default_language) if e.slot == slot]
            values[slot] = found[0].value if found else str(raw).strip()
        return values or None

    def supported_language(self, code: str | None) -> str | None:
        """Map a client's language tag (zh-CN, de-AT, fr) to a language a conversation can be held
        in: the domain's first (zh-TW -> zh when the domain has no zh-tw), else one with framework
        messages (pt-BR -> pt: told in Portuguese which languages the domain answers in)."""
        if not code:
            return None
        code = normalise_language_tag(code)
        for languages in (self.domain.languages, self.conversation_languages):
            for candidate in (code, code.split("-")[0]):
                if candidate in languages:
                    return candidate
        return None

    def answers_in(self, language: str) -> bool:
        """Whether the domain has responses in ``language`` (zh-tw is answered by zh)."""
        return any(code in self.domain.languages for code in (language, language.split("-")[0]))

    # -- language ------------------------------------------------------------------------------
    def identify_language(self, text: str, state: DialogueState, domain_scores: dict[str, float] | None = None) -> LanguageDecision:
        """Switch only on strong evidence; one-word replies keep the session language.

        langdetect (slow, pure Python) is consulted only when a switch is possible: the message is
        long enough or changes script, and the domain model does not already agree with the
        session language.
        """
        settings = self.language_settings
        current = state.language
        letters = letter_count(text)
        script_change = self.detector.is_cjk(text) != current.startswith("zh")
        if domain_scores is None:
            domain_scores = self.detector.domain_scores_many([text])[0]
        if not script_change and letters < settings.min_chars_to_switch:
            scores = self.detector.scores(text, domain_scores, use_langdetect=False)
            return LanguageDecision(current, False, f"too short to judge ({letters} letters); kept {current}", scores)
        if not script_change and domain_scores.get(current, 0.0) >= 0.75:
            scores = self.detector.scores(text, domain_scores, use_langdetect=False)
            return LanguageDecision(current, False, f"domain model agrees with {current} ({domain_scores[current]:.2f})", scores)
        scores = self.detector.scores(text, domain_scores)
        best, probability = self.detector.best(scores["combined"])
        best = self.supported_language(best)
        if best is None or best == current:
            return LanguageDecision(current, False, "same as the session language" if best else "no evidence", scores)
        if script_change and letters >= 2 and probability >= 0.6:
            return LanguageDecision(best, True, f"script changed; {best} {probability:.2f}", scores)
        if letters < settings.min_chars_to_switch:
            return LanguageDecision(current, False, f"too short to judge ({letters} letters); kept {current}", scores)
        needed = settings.switch_confidence if state.turn_count else min(settings.switch_confidence, 0.6)
        if probability >= needed:
            return LanguageDecision(best, True, f"{best} {probability:.2f} >= {needed}", scores)
        return LanguageDecision(current, False, f"{best} {probability:.2f} < {needed}; kept {current}", scores)

    async def identify_language_async(self, text: str, state: DialogueState) -> LanguageDecision:
        """As identify_language, with the domain model's call batched across sessions."""
        domain_scores = await self.language_batcher.submit(text)
        return self.identify_language(text, state, domain_scores)

    def _language_batch(self, items: Sequence[BatchItem[str]]) -> list[dict[str, float]]:
        return self.detector.domain_scores_many([item.payload for item in items])

    # -- understanding -------------------------------------------------------------------------
    def understand(self, text: str, language: str, ranking: list[tuple[str, float]] | None = None) -> Understood:
        entities = self.extractor.extract(text, language)
        masked = self.extractor.mask(text, entities)
        if ranking is None:  # understand_async ranks through the batcher, pleasantries included
            ranking = self._skip_pleasantries(masked, self.classifier.rank(masked))
        intent, confidence = ranking[0]
        out_of_scope = is_out_of_scope(intent, confidence, self.oos_threshold)
        return Understood(text, intent, confidence, [(i, round(p, 4)) for i, p in ranking[:5]], entities, out_of_scope)

    async def understand_async(self, text: str, language: str) -> Understood:
        """As understand, with the classifier calls batched across sessions."""
        masked = self.extractor.mask(text, self.extractor.extract(text, language))
        ranking = await self.nlu_batcher.submit(masked)
        rest = self._after_pleasantry(masked, ranking)
        if rest is not None:
            ranking = self._rest_or(ranking, await self.nlu_batcher.submit(rest))
        return self.understand(text, language, ranking)

    def _nlu_batch(self, items: Sequence[BatchItem[str]]) -> list[list[tuple[str, float]]]:
        return self.classifier.rank_many([item.payload for item in items])

    def _encode_batch(self, items: Sequence[BatchItem[str]]) -> list[Any]:
        assert self.embed is not None
        return list(self.embed([item.payload for item in items]))

    def _after_pleasantry(self, masked: str, ranking: list[tuple[str, float]]) -> str | None:
        """The rest of a several-part message that reads as smalltalk ("Hi, where is my order?")."""
        top = self.domain.spec.intents.get(ranking[0][0])
        parts = [p for p in _CLAUSE.split(masked) if p.strip()]
        if top is None or top.kind != "smalltalk" or len(parts) < 2:
            return None
        return " ".join(parts[1:])

    def _rest_or(self, ranking: list[tuple[str, float]], rest: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The rest's ranking when it reads as a request and no longer as the whole's smalltalk
        intent. An intent answered by its own template (kind smalltalk: every drafted proposal) is
        not always a greeting: "are you hiring? I would like to apply for a job" is a job question
        in both parts, and its second part alone must not hand it to a near intent."""
        rest_intent = self.domain.spec.intents.get(rest[0][0])
        whole_in_rest = dict(rest).get(ranking[0][0], 0.0)
        if (rest_intent and rest_intent.kind not in ("smalltalk", "out_of_scope") and rest[0][1] >= self.oos_threshold
                and whole_in_rest < self.oos_threshold):
            return rest
        return ranking

    def _skip_pleasantries(self, masked: str, ranking: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """"Hi, where is my order?" is an order question: when the whole message reads as
        smalltalk but it has several parts, the rest after the greeting decides."""
        rest = self._after_pleasantry(masked, ranking)
        if rest is None:
            return ranking
        return self._rest_or(ranking, self.classifier.rank(rest))

    # -- responding ----------------------------------------------------------------------------
    async def respond(self, state: DialogueState, message: Understood, language: LanguageDecision, session_id: str) -> tuple[Decision, dict[str, Any]]:
        """Update ``state`` with the message and decide the reply; return it with its trace."""
        if language.switched:
            state.language = language.language
        message = await self._semantic_enum(state, message)
        sentiment = self.sentiment.score(message.text, state.language)
        update = update_state(state, message, self.domain.spec, sentiment.score)
        decision = await self.policy.decide(state, message, update, session_id)
        answer_languages = self._answer_languages_notice(state, decision)
        earlier = [(entry.user, entry.bot) for entry in state.history[-2:]]
        state.history.append(HistoryEntry(message.text, decision.text, message.intent, decision.language))
        del state.history[: -self.history_limit]
        article = self.kb.article(decision.knowledge["used"], decision.knowledge["shown_in"]) if decision.knowledge else None
        prompt_fields = PromptFields(decision.language, message.intent, message.text, dict(decision.facts or {}),
                                     article.body if article else None, decision.text, earlier)
        decision.prompt_fields = prompt_fields
        trace = {
            "turn": state.turn_count,
            "language": language.to_trace(),
            "intent": {
                "name": message.intent,
                "confidence": round(message.confidence, 4),
                "top3": [{"intent": i, "score": s} for i, s in message.ranking[:3]],
                "out_of_scope": message.out_of_scope,
            },
            "entities": [e.to_dict() for e in message.entities],
            "state": {
                "update": update.to_dict(),
                "active_flow": state.active_flow,
                "requested_slot": state.requested_slot,
                "awaiting_confirmation": state.awaiting_confirmation,
                "slots": {name: slot.__dict__ for name, slot in state.slots.items()},
                "failed_turns": state.failed_turns,
                "handed_off": state.handed_off,
                "identifying": state.identifying,
                "verified": {slot: list(values) for slot, values in state.verified.items()},
            },
            "identification": decision.identification,
            "sentiment": {"score": sentiment.score, "trend": state.sentiment_trend, "negative": sentiment.negative, "positive": sentiment.positive},
            "knowledge": decision.knowledge,
            "action": decision.action,
            "response": {
                "path": decision.path,
                "key": decision.key,
                "reason": decision.reason,
                "handoff_reason": decision.handoff_reason,
                "language": decision.language,
                "generator": None,
                "note": "no generator configured: grounded template answer",
                "answer_languages": answer_languages,
                "facts": decision.facts,
                "prompt_fields": prompt_fields.to_dict(),
            },
            "models": {
                "nlu": self.classifier.name,
                # The file's name (domain and content hash: which model answered), not its path:
                # every chat client receives this trace, and the server's folders are not theirs.
                "nlu_model_file": Path(self.nlu_model_info["model_file"]).name,
                "language": "langdetect (seeded) + domain char n-gram",
                "knowledge": "tf-idf char n-gram, title/keywords (as written or as they sound) + body" + (" + sentence-encoder cosine" if self.kb.semantic else ""),
                "generator": None,
            },
        }
        return decision, trace

    history_limit = 10

    async def _semantic_enum(self, state: DialogueState, message: Understood) -> Understood:
        """The asked-for enum slot's value from the encoder when no listed synonym matched
        (voicebot/dialogue/semantic.py)."""
        slot = state.requested_slot
        if self.enums is None or self.encode_batcher is None or slot not in self.enums.slots():
            return message
        if any(entity.slot == slot for entity in message.entities):
            return message
        windows = self.enums.windows(message.text)
        vectors = await asyncio.gather(*(self.encode_batcher.submit(window) for window, _, _ in windows))  # one batch
        found = self.enums.match(slot, windows, np.asarray(vectors))
        if found is None:
            return message
        return dataclasses.replace(message, entities=[*message.entities, found])

    def _answer_languages_notice(self, state: DialogueState, decision: Decision) -> dict[str, str] | None:
        """When the conversation is in a language the domain has no responses in, say so in that
        language, once, before the first answer that comes in the fallback language."""
        if self.answers_in(state.language) or decision.language == state.language or state.told_answer_languages == state.language:
            return None
        state.told_answer_languages = state.language
        names = ", ".join(self.locales.name(code) for code in self.domain.languages)
        notice, notice_language = self.locales.message("answer_languages", state.language, languages=names,
                                                       fallback=self.locales.name(decision.language))
        decision.text = f"{notice} {decision.text}"
        decision.notice, decision.notice_language = notice, notice_language
        return {"text": notice, "language": notice_language, "answered_in": decision.language}

    async def close(self) -> None:
        await self.language_batcher.close()
        await self.nlu_batcher.close()
        if self.encode_batcher is not None:
            await self.encode_batcher.close()
        await self.actions.close()
