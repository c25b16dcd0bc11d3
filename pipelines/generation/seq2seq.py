"""transformers seq2seq generation (mT5, mT0, flan-T5, mBART, NLLB style), batched across sessions.

One worker thread owns the model. It gathers requests from every session into a batch (up to
``max_batch``, waiting at most ``max_wait_s``), runs the encoder once, then decodes greedily step
by step with a key/value cache. Each step's new text is handed to its own request as it appears
(token streaming even when batched). A request that finishes, reaches its own ``max_new_tokens``
or is cancelled (barge-in, a closed chat) leaves the batch at once: its rows are dropped from the
cache and the encoder states, and the others go on unchanged, so greedy output is the same alone
or batched. A batch whose forward pass fails is re-run one request at a time, so only the request
at fault gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicebot.pipelines.generation.base import GenerationError, GenerationResult

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(eq=False)
class _Request:
    prompt: str
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    pieces: asyncio.Queue[str | None]
    future: asyncio.Future[GenerationResult]
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    emitted: str = ""
    ids: list[int] = field(default_factory=list)
    batch_size: int = 0
    started: float = 0.0

    def emit(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, text)

    def finish(self, result: GenerationResult | None = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            self.pieces.put_nowait(None)
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]

        self.loop.call_soon_threadsafe(settle)


def choose_device_and_dtype(device: str = "auto", precision: str = "auto") -> tuple[str, Any, bool]:
    """CUDA with bf16 (fp16 where bf16 is missing) when present, else CPU fp32; int8 = dynamic
    quantisation of the linear layers on CPU. Returns (device, torch dtype, quantise)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "int8" and device != "cpu":
        raise ValueError("int8 dynamic quantisation runs on the CPU; use bf16 or fp16 on a GPU")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
    return device, dtypes[precision], precision == "int8"


class Seq2SeqGenerator:
    class Options(BaseModel):
        """``[generation]`` settings when ``backend = "seq2seq"``."""

        model_config = ConfigDict(extra="forbid")
        model: str = Field(description="Hugging Face id or local folder of a seq2seq model")
        device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
        precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field("auto", description="auto: bf16/fp16 on GPU, fp32 on CPU")
        max_batch: int = Field(16, ge=1)
        max_wait_s: float = Field(0.01, ge=0)
        max_input_tokens: int = Field(512, ge=8)

    def __init__(self, model: str, *, device: str = "auto", precision: str = "auto", max_batch: int = 16,
                 max_wait_s: float = 0.01, max_input_tokens: int = 512) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.model_name = str(model)
        self.device, self.dtype, quantise = choose_device_and_dtype(device, precision)
        self.precision = "int8" if quantise else str(self.dtype).removeprefix("torch.")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_input_tokens = max_input_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        loaded = AutoModelForSeq2SeqLM.from_pretrained(self.model_name, dtype=self.dtype)
        loaded.eval()
        if quantise:
            loaded = torch.ao.quantization.quantize_dynamic(loaded, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = loaded.to(self.device)
        config = self.model.config
        self._start_id = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
        self._eos_id = config.eos_token_id
        self.batch_sizes: list[int] = []
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"generator:{self.model_name}", daemon=True)
        self._thread.start()

    # -- the async side ------------------------------------------------------------------------
    async def stream(self, prompt: str, max_new_tokens: int = 64) -> AsyncIterator[str]:
        """Yield the text as it is generated; cancelling the consumer cancels the request."""
        request = self._submit(prompt, max_new_tokens)
        try:
            while (piece := await request.pieces.get()) is not None:
                yield piece
            await request.future  # raises the request's own error, if any
        finally:
            request.cancelled.set()

    async def generate(self, prompt: str, max_new_tokens: int = 64) -> GenerationResult:
        request = self._submit(prompt, max_new_tokens)
        try:
            return await asyncio.shield(request.future)
        finally:
            request.cancelled.set()

    def start_stream(self, prompt: str, max_new_tokens: int = 64) -> tuple[AsyncIterator[str], asyncio.Future[GenerationResult], threading.Event]:
        """The pieces, the final result and the cancel switch of one request, for callers (the
        generation stage) that need all three."""
        request = self._submit(prompt, max_new_tokens)

        async def pieces() -> AsyncIterator[str]:
            while (piece := await request.pieces.get()) is not None:
                yield piece

        return pieces(), request.future, request.cancelled

    def _submit(self, prompt: str, max_new_tokens: int) -> _Request:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        loop = asyncio.get_running_loop()
        request = _Request(prompt, max_new_tokens, loop, asyncio.Queue(), loop.create_future())
        self._inbox.put(request)
        return request

    def close(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)

    def warm_up(self) -> None:
        """One real generation so the first caller does not pay for lazy initialisation."""
        import torch

        with torch.inference_mode():
            encoded = self.tokenizer(["warm up"], return_tensors="pt").to(self.device)
            self.model.generate(**encoded, max_new_tokens=2, do_sample=False)

    # -- the worker thread ---------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            first = self._inbox.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._inbox.put(_STOP)
                    break
                batch.append(item)
            live = []
            for request in batch:
                if request.cancelled.is_set():
                    request.finish(self._result(request, cancelled=True))
                else:
                    live.append(request)
            if live:
                self._run_isolated(live)

    def _run_isolated(self, batch: list[_Request]) -> None:
        try:
            self._decode(batch)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the callers, not kill the thread
            log.warning("generation batch of %d failed: %s", len(batch), exc)
            if len(batch) == 1:
                batch[0].finish(error=GenerationError(f"{type(exc).__name__}: {exc}"))
                return
            for request in batch:
                if request.emitted:  # its text was already streamed: cannot restart it invisibly
                    request.finish(error=GenerationError(f"batch failed mid-generation: {exc}"))
                else:
                    self._run_isolated([request])

    def _result(self, request: _Request, cancelled: bool = False) -> GenerationResult:
        now = time.perf_counter()
        started = request.started or now
        text = self.tokenizer.decode(request.ids, skip_special_tokens=True) if request.ids else ""
        return GenerationResult(text, len(request.ids), cancelled, request.batch_size,
                                round((started - request.enqueued) * 1000, 3), round((now - started) * 1000, 3), self.model_name)

    def _decode(self, batch: list[_Request]) -> None:
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        started = time.perf_counter()
        self.batch_sizes.append(len(batch))
        for request in batch:
            request.started, request.batch_size = started, len(batch)
        with torch.inference_mode():
            encoded = self.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_input_tokens).to(self.device)
            hidden = self.model.get_encoder()(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).last_hidden_state
            mask = encoded.attention_mask
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            next_ids = torch.full((len(batch), 1), self._start_id, dtype=torch.long, device=self.device)
            rows = list(batch)
            for _ in range(max(r.max_new_tokens for r in rows)):
                output = self.model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=next_ids,
                                    cache=cache, use_cache=True)
                cache = output.cache
                chosen = output.logits[:, -1, :].argmax(dim=-1)
                keep: list[int] = []
                for index, (request, token) in enumerate(zip(rows, chosen.tolist(), strict=True)):
                    if request.cancelled.is_set():
                        request.finish(self._result(request, cancelled=True))
                        continue
                    if token == self._eos_id:
                        request.finish(self._result(request))
                        continue
                    request.ids.append(token)
                    text = self.tokenizer.decode(request.ids, skip_special_tokens=True)
                    if text.startswith(request.emitted) and len(text) > len(request.emitted):
                        request.emit(text[len(request.emitted):])
                        request.emitted = text
                    if len(request.ids) >= request.max_new_tokens:
                        request.finish(self._result(request))
                        continue
                    keep.append(index)
                if not keep:
                    return
                if len(keep) < len(rows):  # finished or cancelled rows leave the batch
                    selected = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(selected)
                    hidden, mask, chosen = hidden[selected], mask[selected], chosen[selected]
                    rows = [rows[i] for i in keep]
                next_ids = chosen[:, None]
