"""Timing standalone models: build an `Arch` with random weights, warm up, repeat, take the median.

What is timed is the deployed model, `AutoTinyBertModel` (embeddings, encoder, pooler) built from
``AutoTinyBertConfig.from_arch(arch)``, in eval mode under `torch.inference_mode`, fp32, one input of
``batch x seq_len`` random token ids (no padding, so no attention mask). Weights are random: latency does not
depend on their values, so the model is built on the meta device and filled with a tiled block of seeded random
numbers, which is ~10x faster than Hugging Face's weight init (values stay far from denormals, which would slow
a CPU down).

Several archs are timed *interleaved*: every repeat runs each model once, so drift (turbo, other processes) hits
them alike. On CUDA each forward is timed with CUDA events after synchronizing.

Backends: ``torch`` (eager), ``onnxruntime`` (the model exported as `autotinybert export` does it, run by ONNX
Runtime) and ``onnxruntime-int8`` (the same graph after ONNX Runtime's dynamic INT8 quantization): the model as it
will be deployed. The ONNX graphs take input_ids, an all-ones attention mask and token type ids.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from ..arch import BERT_BASE, Arch
from ..errors import UserError
from ..runtime import torch_threads
from .device import check_settings, device_record

Timer = Callable[[], float]  # like time.perf_counter: seconds


@dataclass(frozen=True)
class TimingStats:
    """Summary of one arch's repeats, in milliseconds."""
    median_ms: float
    iqr_ms: float  # 75th - 25th percentile
    repeats: int


def summarize(samples_ms: Sequence[float]) -> TimingStats:
    """Median, inter-quartile range and count of the timed repeats (warm-up runs are never passed in)."""
    if len(samples_ms) == 0:
        raise UserError("no timed repeats to summarize; repeats must be >= 1")
    values = np.asarray(samples_ms, dtype=np.float64)
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return TimingStats(median_ms=float(q50), iqr_ms=float(q75 - q25), repeats=len(values))


@dataclass
class LatencyRecord:
    """One arch measured on one device with one set of settings."""
    arch: Arch
    median_ms: float
    iqr_ms: float
    repeats: int
    backend: str = "torch"
    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    seq_len: int = 128
    clock: str = "wall"
    is_reference: bool = False
    samples_ms: list[float] = field(default_factory=list)

    @property
    def settings(self) -> tuple:
        return (self.backend, self.device, self.threads, self.batch, self.seq_len, self.clock)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": str(self.arch), "median_ms": round(self.median_ms, 5), "iqr_ms": round(self.iqr_ms, 5),
                "repeats": self.repeats, "backend": self.backend, "device": self.device, "threads": self.threads,
                "batch": self.batch, "seq_len": self.seq_len, "clock": self.clock, "is_reference": self.is_reference,
                "samples_ms": [round(s, 5) for s in self.samples_ms]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyRecord:
        device = data.get("device", "cpu")
        if isinstance(device, dict):  # a latency-file line carries the whole device record under "device"
            device = device.get("device", "cpu")
        try:
            return cls(arch=Arch.parse(data["arch"]), median_ms=float(data["median_ms"]),
                       iqr_ms=float(data["iqr_ms"]), repeats=int(data["repeats"]),
                       backend=data.get("backend", "torch"), device=device,
                       threads=int(data.get("threads", 1)), batch=int(data.get("batch", 1)),
                       seq_len=int(data.get("seq_len", 128)), clock=str(data.get("clock", "wall")),
                       is_reference=bool(data.get("is_reference", False)),
                       samples_ms=[float(s) for s in data.get("samples_ms", [])])
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"latency record {data!r} is malformed ({err}); expected arch, median_ms, iqr_ms, "
                            "repeats as written by autotinybert latency measure") from None


# ----- building models ----------------------------------------------------------------------------------------
def build_model(arch: Arch | str, *, vocab_size: int = 30522, seed: int = 0, device: str = "cpu"):
    """`AutoTinyBertModel` for `arch` in eval mode with seeded random weights, built without HF's slow init."""
    from ..modeling import AutoTinyBertConfig, AutoTinyBertModel

    config = AutoTinyBertConfig.from_arch(Arch.parse(arch), vocab_size=vocab_size)
    with torch.device("meta"):
        model = AutoTinyBertModel(config)
    model = model.to_empty(device=device).eval()
    generator = torch.Generator().manual_seed(seed)
    block = ((torch.rand(1 << 16, generator=generator) - 0.5) * 0.04).to(device)  # U(-0.02, 0.02)
    with torch.no_grad():
        for param in model.parameters():
            flat = param.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                stop = min(start + block.numel(), flat.numel())
                flat[start:stop] = block[: stop - start]
        for buffer in model.buffers():  # position_ids-style buffers, if a version adds any
            if buffer.is_floating_point():
                buffer.zero_()
    return model


def random_input_ids(batch: int, seq_len: int, vocab_size: int = 30522, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids, (batch, seq_len)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq_len), generator=generator)  # (B, T)


class Runner(Protocol):
    """One ready-to-run model: ``forward()`` runs it once; ``time_once(timer)`` runs it once and returns the
    milliseconds."""

    def forward(self) -> Any: ...

    def time_once(self, timer: Timer) -> float: ...

    def close(self) -> None: ...


class TorchRunner:
    """Eager PyTorch under `inference_mode`; CUDA events on CUDA."""

    def __init__(self, arch: Arch, batch: int, seq_len: int, device: str = "cpu", seed: int = 0):
        self.device = device
        self.model = build_model(arch, seed=seed, device=device)
        self.input_ids = random_input_ids(batch, seq_len, seed=seed).to(device)

    def forward(self):
        with torch.inference_mode():
            return self.model(self.input_ids, return_dict=True)

    def time_once(self, timer: Timer) -> float:
        if self.device == "cuda":
            cuda = torch.cuda
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            cuda.synchronize()
            start.record()
            self.forward()
            end.record()
            cuda.synchronize()
            return float(start.elapsed_time(end))
        t0 = timer()
        self.forward()
        return (timer() - t0) * 1e3

    def close(self) -> None:
        self.model = None


def export_onnx(arch: Arch | str, path: str | Path, *, batch: int = 1, seq_len: int = 128, seed: int = 0) -> Path:
    """Export the standalone model of `arch` (random weights) to ONNX the way `autotinybert export` does
    (`autotinybert.export.export_onnx_model`: dynamic batch and sequence axes, attention mask; outputs
    last_hidden_state and pooler_output). `batch` and `seq_len` are kept for callers; the axes are dynamic."""
    from ..export import export_onnx_model

    return export_onnx_model(build_model(arch, seed=seed), path, head="base")


class OnnxRuntimeRunner:
    """An ONNX Runtime session of the exported model (fp32, or INT8 by dynamic quantization with ``int8``), with the
    same thread count as torch and the session settings of a deployment (`autotinybert.export.ort_session`)."""

    def __init__(self, arch: Arch, batch: int, seq_len: int, device: str = "cpu", seed: int = 0, threads: int = 1,
                 int8: bool = False, onnx_path: str | Path | None = None):
        """`onnx_path`: run this exported file (already quantized when `int8`) instead of exporting `arch` here."""
        from ..export import example_inputs, ort_session, quantize_int8, session_feed

        if onnx_path is not None:
            self.session = ort_session(onnx_path, threads=threads, device=device)
        else:
            with tempfile.TemporaryDirectory(prefix="autotinybert-onnx-") as tmp:
                path = export_onnx(arch, Path(tmp) / "model.onnx", seed=seed)
                if int8:
                    path = quantize_int8(path, Path(tmp) / "model_int8.onnx")
                self.session = ort_session(path, threads=threads, device=device)
        feed = example_inputs(batch, seq_len, 30522, seed=seed, pad_last=False, type_vocab_size=1)  # one segment
        feed["input_ids"] = random_input_ids(batch, seq_len, seed=seed).numpy()  # the ids the torch runner uses
        self.feed = session_feed(self.session, feed)

    def forward(self):
        return self.session.run(None, self.feed)

    def time_once(self, timer: Timer) -> float:
        t0 = timer()
        self.forward()  # returns host numpy arrays, so a CUDA run has finished when it returns
        return (timer() - t0) * 1e3

    def close(self) -> None:
        self.session = None


def make_runner(arch: Arch, *, backend: str = "torch", device: str = "cpu", threads: int = 1, batch: int = 1,
                seq_len: int = 128, seed: int = 0) -> Runner:
    if backend == "torch":
        return TorchRunner(arch, batch, seq_len, device, seed)
    if backend in ("onnxruntime", "onnxruntime-int8"):
        return OnnxRuntimeRunner(arch, batch, seq_len, device, seed, threads, int8=backend == "onnxruntime-int8")
    raise UserError(f"unknown latency backend {backend!r}; choose 'torch', 'onnxruntime' or 'onnxruntime-int8'")


# ----- timing -------------------------------------------------------------------------------------------------
def time_interleaved(runners: Sequence[Runner], *, warmup: int, repeats: int, timer: Timer = time.perf_counter,
                     settle: int = 1) -> list[list[float]]:
    """Warm every runner up, then `repeats` rounds each running every runner once; per-runner samples in ms.

    Each timed run comes right after `settle` untimed runs of the same model. Without them the model timed after
    a big one (BERT-base sweeps ~400 MB through the caches) pays for refetching its weights: measured on 1 ms
    models, the first one after BERT-base read 1.3-1.6x its settled time, the next ones less, so a model's
    latency depended on its neighbours in the round.
    """
    for _ in range(warmup):
        for runner in runners:
            runner.time_once(timer)
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(repeats):
        for runner, out in zip(runners, samples):
            for _ in range(settle):
                runner.forward()
            out.append(runner.time_once(timer))
    return samples


def _check_counts(warmup: int, repeats: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be an integer >= 1, got {repeats!r}")


def clock_timer(clock: str) -> Timer:
    """``wall``: elapsed time (`time.perf_counter`). ``cpu``: the calling thread's CPU time (`time.thread_time`).

    At one thread the whole forward runs on the calling thread (torch and ONNX Runtime alike), so its CPU time is
    the latency the model has on an idle core; time slices lost to other processes on a shared machine are not
    counted. Use it on a busy machine; use ``wall`` on the deployment machine itself.
    """
    return time.thread_time if clock == "cpu" else time.perf_counter


def measure_latency(archs: Sequence[Arch | str], *, backend: str = "torch", threads: int = 1, batch: int = 1,
                    seq_len: int = 128, device: str = "cpu", warmup: int = 3, repeats: int = 10,
                    reference: bool = False, seed: int = 0, clock: str = "wall",
                    timer: Timer | None = None) -> list[LatencyRecord]:
    """Time `archs` interleaved (all models are built first) and return one `LatencyRecord` per arch, in order.

    ``reference=True`` also times BERT-base (`BERT_BASE`) in the same interleaved rounds and appends its record
    (``is_reference=True``) last; speedup = reference.median_ms / record.median_ms. ``clock`` is "wall" or
    "cpu" (see `clock_timer`); `timer` overrides it (tests pass a stub).
    """
    parsed = [Arch.parse(a) for a in archs]
    check_settings(backend, device, threads, batch, seq_len, clock)
    _check_counts(warmup, repeats)
    timer = timer or clock_timer(clock)
    if not parsed and not reference:
        raise UserError("no architectures to measure")
    flags = [False] * len(parsed)
    if reference:
        parsed.append(BERT_BASE)
        flags.append(True)
    records = []
    with torch_threads(threads):
        runners = [make_runner(a, backend=backend, device=device, threads=threads, batch=batch, seq_len=seq_len,
                               seed=seed) for a in parsed]
        try:
            samples = time_interleaved(runners, warmup=warmup, repeats=repeats, timer=timer)
        finally:
            for runner in runners:
                runner.close()
    for arch, is_ref, times in zip(parsed, flags, samples):
        stats = summarize(times)
        records.append(LatencyRecord(arch, stats.median_ms, stats.iqr_ms, stats.repeats, backend, device, threads,
                                     batch, seq_len, clock, is_ref, times))
    return records

