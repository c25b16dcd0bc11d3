"""Fine-tune the seq2seq response generator on an exported dataset (`voicebot train generator`).

Uses transformers' Seq2SeqTrainer on a plain torch Dataset (no `datasets` dependency): CUDA with
bf16 mixed precision when the GPU supports it, else the CPU in fp32. The mean loss over the data
is measured before and after, with the same token-weighted computation, so the two numbers are
comparable and show whether the run learned anything. The result is one folder (model, tokenizer,
``voicebot-training.json``) that `AutoModelForSeq2SeqLM.from_pretrained`, the runtime's
`generation.model` setting and `PUT /api/generator` load as it is; nothing else is left behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = "voicebot-training.json"  # names a folder this command wrote (and may overwrite)


class TrainingDataError(ValueError):
    """The dataset file is missing, empty or has a malformed line."""


@dataclass
class TrainingReport:
    base: str
    data: str
    data_sha256: str
    examples: int
    steps: int
    batch_size: int
    learning_rate: float
    device: str
    precision: str
    first_loss: float
    last_loss: float
    loss_before: float
    loss_after: float
    seconds: float


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(input, target) pairs from a JSONL file as `voicebot export-dataset` writes it."""
    if not path.is_file():
        raise TrainingDataError(f"no dataset at {path}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingDataError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("input"), str) or not isinstance(record.get("target"), str):
            raise TrainingDataError(f"{path}:{number}: a line needs string fields 'input' and 'target'")
        if record["input"].strip() and record["target"].strip():
            pairs.append((record["input"], record["target"]))
    if not pairs:
        raise TrainingDataError(f"{path} has no examples")
    return pairs


class _Examples:
    """Tokenised pairs as a torch-style Dataset (``__len__``/``__getitem__``)."""

    def __init__(self, pairs: list[tuple[str, str]], tokenizer: Any, max_input_tokens: int, max_target_tokens: int) -> None:
        inputs = tokenizer([p[0] for p in pairs], max_length=max_input_tokens, truncation=True)
        labels = tokenizer(text_target=[p[1] for p in pairs], max_length=max_target_tokens, truncation=True)["input_ids"]
        self.items = [{"input_ids": ids, "attention_mask": mask, "labels": label}
                      for ids, mask, label in zip(inputs["input_ids"], inputs["attention_mask"], labels, strict=True)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]


def mean_loss(model: Any, dataset: _Examples, collator: Any, batch_size: int, device: Any) -> float:
    """Cross-entropy per target token over the whole dataset (padding excluded)."""
    import torch
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):  # type: ignore[arg-type]
            batch = {key: value.to(device) for key, value in batch.items()}
            count = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * count
            tokens += count
    model.train(was_training)
    return total / max(tokens, 1)


def train_generator(data: Path, base: str, out: Path, *, steps: int = 100, learning_rate: float = 3e-4, batch_size: int = 8,
                    max_input_tokens: int = 512, max_target_tokens: int = 128, seed: int = 0,
                    echo: Callable[[str], None] = print) -> TrainingReport:
    import torch
    import transformers
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )
    from transformers.trainer_callback import PrinterCallback

    if steps < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("steps and batch size must be at least 1 and the learning rate positive")
    _check_out(out)
    pairs = read_pairs(data)
    started = time.perf_counter()
    verbosity, bars = transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # loading/saving bars: noise in a CLI's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSeq2SeqLM.from_pretrained(base, dtype=torch.float32)  # fp32 master weights; bf16 only in autocast
        dataset = _Examples(pairs, tokenizer, max_input_tokens, max_target_tokens)
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        losses: list[tuple[int, float]] = []

        class LossLog(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    losses.append((state.global_step, float(logs["loss"])))

        with tempfile.TemporaryDirectory(prefix="voicebot-train-") as scratch:
            arguments = Seq2SeqTrainingArguments(
                output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
                warmup_steps=0, logging_strategy="steps", logging_steps=1, logging_first_step=True, save_strategy="no",
                eval_strategy="no", report_to="none", disable_tqdm=True, log_level="error", bf16=bf16, seed=seed, data_seed=seed,
                remove_unused_columns=False, dataloader_pin_memory=cuda, dataloader_num_workers=0,
            )
            trainer = Seq2SeqTrainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator,  # type: ignore[arg-type]
                                     processing_class=tokenizer, callbacks=[LossLog()])
            trainer.remove_callback(PrinterCallback)  # it prints every log line
            device = arguments.device
            precision = "bf16 mixed" if bf16 else "fp32"
            model.to(device)
            echo(f"fine-tuning {base} on {len(dataset)} examples from {data}: {steps} steps, batch {batch_size}, "
                 f"learning rate {learning_rate:g}, {device} {precision}")
            before = mean_loss(model, dataset, collator, batch_size, device)
            echo(f"mean loss on the data before training: {before:.4f}")
            trainer.train()
            (first_step, first), (last_step, last) = losses[0], losses[-1]
            echo(f"training loss: step {first_step} {first:.4f} -> step {last_step} {last:.4f}")
            after = mean_loss(model, dataset, collator, batch_size, device)
            echo(f"mean loss on the data after training: {after:.4f} (before {before:.4f})")
        report = TrainingReport(
            base=str(base), data=str(data), data_sha256=hashlib.sha256(data.read_bytes()).hexdigest(), examples=len(dataset),
            steps=steps, batch_size=batch_size, learning_rate=learning_rate, device=str(device), precision=precision,
            first_loss=round(first, 6), last_loss=round(last, 6), loss_before=round(before, 6), loss_after=round(after, 6),
            seconds=round(time.perf_counter() - started, 2),
        )
        _save(model, tokenizer, report, out)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    echo(f"model and tokenizer saved to {out} ({report.seconds:.1f} s)")
    return report


def _check_out(out: Path) -> None:
    """Never overwrite a folder this command did not write (``--out .`` must not wipe a project)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise FileExistsError(f"{out} exists and is not a folder `voicebot train generator` wrote; choose a new --out")


def _save(model: Any, tokenizer: Any, report: TrainingReport, out: Path) -> None:
    """Write beside ``out`` and then swap, so a server loading ``out`` never sees half a model."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / MARKER).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
