"""Build a randomly initialised T5/mT5 with a sentencepiece tokenizer trained on local text.

No multilingual seq2seq weights install offline here, so tests and benchmarks use models of the
right architecture and size with random weights: the code paths (loading from a folder, batching,
streaming, cancellation, fine-tuning) are the real ones; only the words are nonsense.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

# t5-small's dimensions, for benchmarks that should cost what a real small model costs.
T5_SMALL = {"d_model": 512, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8, "d_kv": 64}
TINY = {"d_model": 32, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2, "d_kv": 16}


def demo_corpus(domain_folder: Path) -> list[str]:
    """Every sentence of a domain (examples, responses, articles): text to train a tokenizer on."""
    import yaml

    corpus: list[str] = []
    for path in sorted(domain_folder.glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for examples in (data.get("intents") or {}).values():
            corpus += [str(e) for e in examples]
        for template in (data.get("responses") or {}).values():
            corpus += [str(t) for t in (template if isinstance(template, list) else [template])]
        corpus += [f"{a['title']}. {a['body']}" for a in data.get("articles") or []]
    return corpus


def train_tokenizer(corpus: Iterable[str], folder: Path, vocab_size: int = 2000) -> None:
    """A sentencepiece unigram model saved as ``spiece.model`` (what T5 tokenizers load).

    transformers 5.x ignores ``T5Tokenizer(vocab_file=...)``: the file must sit in the folder
    and the tokenizer be loaded with ``from_pretrained(folder)``.
    """
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus)), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.98, byte_fallback=True, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        user_defined_symbols=[], hard_vocab_limit=False, minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(buffer.getvalue())


def build_random_seq2seq(folder: Path, corpus: Iterable[str], *, architecture: str = "t5", size: dict[str, int] | None = None,
                         vocab_size: int = 2000, seed: int = 0) -> Path:
    """Write a loadable model folder (config, weights, tokenizer) with random weights."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration, T5Tokenizer

    train_tokenizer(corpus, folder, vocab_size)
    tokenizer = T5Tokenizer.from_pretrained(str(folder), extra_ids=0, legacy=False)
    tokenizer.save_pretrained(str(folder))
    config_class, model_class = (MT5Config, MT5ForConditionalGeneration) if architecture == "mt5" else (T5Config, T5ForConditionalGeneration)
    config = config_class(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, **(size or TINY),
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.save_pretrained(str(folder))
    return folder
