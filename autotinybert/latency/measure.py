"""Timing standalone models: build an `Arch` with random weights, warm up, time it beside a reference.

What is timed is the deployed model, `AutoTinyBertModel` (embeddings, encoder, pooler) built from
``AutoTinyBertConfig.from_arch(arch)``, in eval mode under `torch.inference_mode`, fp32, one input of
``batch x seq_len`` random token ids (no padding, so no attention mask). Weights are random: latency does not
depend on their values, so the model is built on the meta device and filled with a tiled block of seeded random
numbers, which is ~10x faster than Hugging Face's weight init (values stay far from denormals, which would slow
a CPU down).

The default protocol is *anchored* (`Ladder`, `time_paired`): each arch is timed in rounds beside the anchor model
nearest its size, the anchor timed in every round, and its latency is the statistic of the per-round ratios times
the anchor's calibrated ratio to BERT-base, so a speedup is built from times taken milliseconds apart and survives
the machine's drift. The old protocol, *interleaved*: every repeat runs each model once, so drift (turbo, other
processes) hits them alike, raw medians. On CUDA each forward is timed with CUDA events after synchronizing.

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
DEFAULT_STATISTIC = "quiet"  # how the anchored protocol turns a pair's samples into a ratio (`pair_ratio`)


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
    # anchored protocol (see `Ladder`): latency as a fraction of BERT-base's, measured against an anchor
    # model timed in the same rounds; median_ms is then ratio x the campaign's BERT-base ms
    ratio: float | None = None  # this model's latency / BERT-base's (1.0 for the reference)
    anchor: str | None = None  # the anchor arch it was timed against
    anchor_ratio: float | None = None  # statistic of (this model / anchor) over the rounds
    anchor_samples_ms: list[float] = field(default_factory=list)  # the anchor's time in each round
    raw_median_ms: float | None = None  # median of the raw samples (median_ms is the normalised one)

    @property
    def settings(self) -> tuple:
        return (self.backend, self.device, self.threads, self.batch, self.seq_len, self.clock)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": str(self.arch), "median_ms": round(self.median_ms, 5), "iqr_ms": round(self.iqr_ms, 5),
                "repeats": self.repeats, "backend": self.backend, "device": self.device, "threads": self.threads,
                "batch": self.batch, "seq_len": self.seq_len, "clock": self.clock, "is_reference": self.is_reference,
                "samples_ms": [round(s, 5) for s in self.samples_ms],
                **({} if self.ratio is None and self.anchor is None else {
                    "ratio": None if self.ratio is None else round(self.ratio, 8), "anchor": self.anchor,
                    "anchor_ratio": None if self.anchor_ratio is None else round(self.anchor_ratio, 8),
                    "anchor_samples_ms": [round(s, 5) for s in self.anchor_samples_ms],
                    "raw_median_ms": None if self.raw_median_ms is None else round(self.raw_median_ms, 5)})}

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
                       samples_ms=[float(s) for s in data.get("samples_ms", [])],
                       ratio=_opt_float(data.get("ratio")), anchor=data.get("anchor"),
                       anchor_ratio=_opt_float(data.get("anchor_ratio")),
                       anchor_samples_ms=[float(s) for s in data.get("anchor_samples_ms", [])],
                       raw_median_ms=_opt_float(data.get("raw_median_ms")))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"latency record {data!r} is malformed ({err}); expected arch, median_ms, iqr_ms, "
                            "repeats as written by autotinybert latency measure") from None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
                    reference: bool = False, seed: int = 0, clock: str = "wall", protocol: str = "anchored",
                    budget_s: float = 0.5, max_repeats: int = 400, statistic: str = DEFAULT_STATISTIC,
                    passes: int = 1, anchors: Sequence[Arch | str] | None = None,
                    timer: Timer | None = None) -> list[LatencyRecord]:
    """Time `archs` and return one `LatencyRecord` per arch, in order (BERT-base's record last with ``reference``).

    ``protocol="anchored"`` (the default, see `Ladder` and docs/latency.md): each arch is timed in rounds beside the
    anchor nearest its size, for ``repeats`` rounds at least and until ``budget_s`` seconds of timed runs (at most
    ``max_repeats``); its ``ratio`` to BERT-base is the anchor ratio times the calibrated anchor chain, and
    ``median_ms`` is that ratio times BERT-base's ms. With ``passes=P`` every arch is timed in P passes over the
    list (built anew each time, beside the anchor its first pass chose, `budget_s` / P per pass, the ladder
    re-calibrated before each pass), its samples pooled: see `Ladder`. ``protocol="interleaved"`` (the old one): all
    models built first, `repeats` rounds each running every model once, raw medians.

    ``reference=True`` appends BERT-base's record (``is_reference=True``); speedup = reference.median_ms /
    record.median_ms (= 1 / record.ratio when anchored). Without the reference there is nothing to normalise by,
    so ``reference=False`` always times the interleaved way (raw medians). ``clock`` is "wall" or "cpu" (see
    `clock_timer`); `timer` overrides it (tests pass a stub).
    """
    parsed = [Arch.parse(a) for a in archs]
    check_settings(backend, device, threads, batch, seq_len, clock)
    _check_counts(warmup, repeats)
    check_protocol(protocol, budget_s, max_repeats, repeats, statistic, passes)
    timer = timer or clock_timer(clock)
    if not parsed and not reference:
        raise UserError("no architectures to measure")
    settings = dict(backend=backend, device=device, threads=threads, batch=batch, seq_len=seq_len, seed=seed)
    if protocol == "anchored" and reference:
        with torch_threads(threads):
            ladder = Ladder(anchors, settings, timer=timer, warmup=warmup, min_rounds=repeats,
                            max_rounds=max_repeats, budget_ms=budget_s * 1e3 / passes, statistic=statistic,
                            link_budget_ms=link_budget_ms(budget_s, passes))
            try:
                blocks: list[PairBlock] = []  # per arch, every pass pooled
                for p in range(passes):
                    ladder.calibrate()
                    for i, arch in enumerate(parsed):
                        runner = make_runner(arch, **settings)
                        try:
                            block = ladder.time_arch(arch, runner, anchor=blocks[i].anchor if p else None)
                        finally:
                            runner.close()
                        if p:
                            blocks[i] = blocks[i].pooled_with(block)
                        else:
                            blocks.append(block)
                ladder.calibrate()  # again at the end: the chain is the statistic over every calibration
            finally:
                ladder.close()
        common = (backend, device, threads, batch, seq_len, clock)
        return [ladder.record(block, common) for block in blocks] + [ladder.reference_record(common)]
    if passes != 1:  # anchored without the reference: timed the interleaved way (see above)
        raise UserError(f"passes={passes} needs reference=True: without BERT-base the models are timed the "
                        "interleaved way, in one pass")

    flags = [False] * len(parsed)
    if reference:
        parsed.append(BERT_BASE)
        flags.append(True)
    records = []
    with torch_threads(threads):
        runners = [make_runner(a, **settings) for a in parsed]
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


# ----- the anchored protocol --------------------------------------------------------------------------------------
# Anchors: a ladder of fixed models from ~0.5 ms to ~50 ms (1 thread, 128 tokens), BERT-base above them. Each arch
# is timed beside the anchor nearest its size; neighbouring rungs are timed beside each other to chain every anchor
# to BERT-base. Why: on a shared or virtualised CPU the machine's speed drifts by 20 % between campaigns (other
# tenants, the other core's load, cache sharing), and it drifts alike for two models timed milliseconds apart but
# not for models timed minutes apart; and it drifts most alike for models of similar size (a 1 ms model that lives
# in the L2 cache slows differently from BERT-base streaming 400 MB).
ANCHORS = ("1-128-512-2-128", "4-256-1024-4-256", "6-512-2048-8-512")
PROTOCOLS = ("anchored", "interleaved")
STATISTICS = ("quiet", "trimmed", "median", "mean", "lowmean")


def ratio_statistic(ratios: Sequence[float], statistic: str = "trimmed") -> float:
    """One number from per-round ratios (model time / anchor time in the same round), for the per-round statistics:
    ``trimmed`` (mean of the 20th-80th percentiles), ``median``, ``mean``, ``lowmean`` (mean of the lower half).
    The default protocol uses `pair_ratio` with ``quiet`` instead (see there why)."""
    if statistic not in STATISTICS or statistic == "quiet":
        raise UserError(f"unknown per-round statistic {statistic!r}; choose one of {list(STATISTICS[1:])}")
    values = np.sort(np.asarray(ratios, dtype=np.float64))
    if values.size == 0:
        raise UserError("no timed rounds to summarize; repeats must be >= 1")
    n = values.size
    if statistic == "median":
        return float(np.median(values))
    if statistic == "mean":
        return float(values.mean())
    if statistic == "trimmed":
        lo, hi = int(0.2 * n), max(int(0.2 * n) + 1, int(np.ceil(0.8 * n)))
        return float(values[lo:hi].mean())
    return _lower_half_mean(values)


def _lower_half_mean(values: np.ndarray) -> float:
    values = np.sort(np.asarray(values, dtype=np.float64))
    return float(values[: (values.size + 1) // 2].mean())  # the median included when the count is odd


def pair_ratio(model_ms: Sequence[float], anchor_ms: Sequence[float], statistic: str = DEFAULT_STATISTIC) -> float:
    """Model latency / anchor latency from the samples of rounds that timed both.

    ``quiet`` (the default): the mean of the lower half of the model's samples over the same of the anchor's. Each
    is that model's time in the quieter half of the rounds (interference only slows a run down); pairing the rounds
    keeps both estimates from the same stretch of time, so slow drift cancels. The other statistics work on the
    per-round ratios (`ratio_statistic`). Measured on two campaigns of the same archs under load 5-7 (the
    latency_predictor benchmark's data, as speedups over BERT-base): quiet gave a repeat-campaign MAPE of 5.3 / 3.7
    / 4.7 % (mlm / cpu-mlm / demo space), the trimmed mean of per-round ratios 5.1 / 5.2 / 18.6 %, their median
    5.0 / 3.2 / 17.7 %, and their lower-half mean 8.0 / 8.6 / 7.1 %. Per-round ratios of a 1 ms model scatter ~3x more
    than those of a 50 ms one, which biases a low statistic of the ratios by model size (a 11 % step between the
    cpu-mlm archs on the 1 ms and on the 10 ms anchor); their central statistics follow the machine's state at the
    moment of each calibration, which moved the 1 ms anchor's chained ratio by 12 % between two campaigns.
    """
    x, a = np.asarray(model_ms, dtype=np.float64), np.asarray(anchor_ms, dtype=np.float64)
    if x.size == 0 or x.size != a.size:
        raise UserError(f"a pair needs the same number (>= 1) of model and anchor samples, got {x.size} and {a.size}")
    if statistic == "quiet":
        return _lower_half_mean(x) / _lower_half_mean(a)
    return ratio_statistic(x / a, statistic)


def check_protocol(protocol: str, budget_s: float, max_repeats: int, repeats: int = 1,
                   statistic: str = DEFAULT_STATISTIC, passes: int = 1) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown latency protocol {protocol!r}; choose 'anchored' (default) or 'interleaved'")
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s >= 0:
        raise UserError(f"budget_s must be a number of seconds >= 0, got {budget_s!r}")
    if isinstance(max_repeats, bool) or not isinstance(max_repeats, int) or max_repeats < repeats:
        raise UserError(f"max_repeats must be an integer >= repeats ({repeats}), got {max_repeats!r}")
    if statistic not in STATISTICS:
        raise UserError(f"unknown statistic {statistic!r}; choose one of {list(STATISTICS)}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise UserError(f"passes must be an integer >= 1, got {passes!r}")
    if passes != 1 and protocol != "anchored":
        raise UserError(f"passes={passes} needs protocol=anchored; the interleaved protocol times each model once")


def time_paired(anchor: Runner, runner: Runner, *, min_rounds: int, max_rounds: int, budget_ms: float,
                timer: Timer, settle: int = 1) -> tuple[list[float], list[float]]:
    """Rounds of (anchor, model), in ABBA order, each timed run right after `settle` untimed runs of the same model.

    Adaptive: at least `min_rounds` rounds, then more until the timed runs of both models add up to `budget_ms`,
    at most `max_rounds`. So a 0.5 ms model gets hundreds of rounds and a 100 ms one `min_rounds`: the rounds a model
    needs to average out interference grow as it gets shorter. Returns (anchor samples, model samples) in ms.
    """
    anchor_ms: list[float] = []
    model_ms: list[float] = []
    spent = 0.0
    while len(model_ms) < max_rounds and (len(model_ms) < min_rounds or spent < budget_ms):
        order = ((anchor, anchor_ms), (runner, model_ms))
        for who, out in (order if len(model_ms) % 2 == 0 else order[::-1]):  # ABBA: no model always goes first
            for _ in range(settle):
                who.forward()
            out.append(who.time_once(timer))
        spent += anchor_ms[-1] + model_ms[-1]
    return anchor_ms, model_ms


@dataclass
class PairBlock:
    """One model timed beside one anchor: the samples of both, round by round."""

    arch: Arch
    anchor: Arch
    model_ms: list[float]
    anchor_ms: list[float]

    def ratio(self, statistic: str = DEFAULT_STATISTIC) -> float:
        return pair_ratio(self.model_ms, self.anchor_ms, statistic)

    def pooled_with(self, other: PairBlock) -> PairBlock:
        """This block and another pass of the same model beside the same anchor, as one block."""
        if (other.arch, other.anchor) != (self.arch, self.anchor):
            raise UserError(f"cannot pool {other.arch} timed beside {other.anchor} with {self.arch} beside "
                            f"{self.anchor}: every pass of a model uses the anchor of its first")
        return PairBlock(self.arch, self.anchor, self.model_ms + other.model_ms, self.anchor_ms + other.anchor_ms)


def link_budget_ms(budget_s: float, passes: int) -> float:
    """Timed budget of one calibration link: 4x an arch's per-pass budget, 8x with several passes (each pass then
    has a fraction of the arch's budget, and the links are what every pass shares)."""
    return (4 if passes == 1 else 8) * budget_s * 1e3 / passes


def _work(arch: Arch) -> float:
    """Multiply-adds of one forward at 128 tokens (orders the anchors by size without timing them)."""
    from .features import analytic_terms

    return float(analytic_terms([arch], 1, 128)[0, :3].sum())


def chain_ratios(links: dict[tuple[Arch, Arch], tuple[list[float], list[float]]],
                 statistic: str = DEFAULT_STATISTIC) -> dict[Arch, float]:
    """Each rung's latency / BERT-base's from each (lower, upper) link's pooled (lower samples, upper samples)."""
    uppers = {lower: upper for lower, upper in links}
    out: dict[Arch, float] = {BERT_BASE: 1.0}

    def resolve(arch: Arch, depth: int = 0) -> float:
        if arch in out:
            return out[arch]
        if arch not in uppers or depth > 32:
            raise UserError(f"anchor {arch} is not chained to BERT-base: its calibration rows are missing; "
                            "re-measure with autotinybert latency measure")
        out[arch] = pair_ratio(*links[(arch, uppers[arch])], statistic) * resolve(uppers[arch], depth + 1)
        return out[arch]

    for lower in uppers:
        resolve(lower)
    return out


class Ladder:
    """The anchors and BERT-base, built once; calibrates the chain and times archs beside their nearest anchor."""

    def __init__(self, anchors: Sequence[Arch | str] | None, settings: dict[str, Any], *, timer: Timer,
                 warmup: int, min_rounds: int, max_rounds: int, budget_ms: float,
                 statistic: str = DEFAULT_STATISTIC,
                 link_budget_ms: float | None = None):
        """`link_budget_ms` (default 4 x `budget_ms`; see `link_budget_ms`): the timed budget of each calibration
        link. A link's error enters the speedup of every arch timed against the rungs below it, so it gets more rounds
        than one arch."""
        rungs = [Arch.parse(a) for a in (ANCHORS if anchors is None else anchors)]
        if BERT_BASE in rungs:
            raise UserError("BERT-base is always the top of the anchor ladder; list only the smaller anchors")
        if len(set(rungs)) != len(rungs):
            raise UserError(f"anchors {[str(a) for a in rungs]} repeat an arch")
        self.rungs = sorted(rungs, key=_work) + [BERT_BASE]  # ascending size
        self.settings, self.timer, self.warmup, self.statistic = settings, timer, warmup, statistic
        self.min_rounds, self.max_rounds, self.budget_ms = min_rounds, max_rounds, budget_ms
        self.link_budget_ms = 4 * budget_ms if link_budget_ms is None else link_budget_ms
        self.runners = {a: make_runner(a, **settings) for a in self.rungs}
        for runner in self.runners.values():
            for _ in range(max(1, warmup)):
                runner.forward()
        self.size_ms: dict[Arch, float] = {}  # raw median of each rung in the latest calibration
        # (lower, upper) -> pooled (lower samples, upper samples) over every calibration
        self.links: dict[tuple[Arch, Arch], tuple[list[float], list[float]]] = {}
        self.blocks: list[PairBlock] = []  # every calibration block, in order (for the dataset file)
        self.reference_ms: list[float] = []  # BERT-base's raw samples over every calibration

    def calibrate(self) -> list[PairBlock]:
        """Time each rung beside the next one up (the top one beside BERT-base); pool the samples per link."""
        new = []
        for lower, upper in zip(self.rungs[:-1], self.rungs[1:]):
            upper_ms, lower_ms = time_paired(self.runners[upper], self.runners[lower], min_rounds=self.min_rounds,
                                             max_rounds=self.max_rounds, budget_ms=self.link_budget_ms,
                                             timer=self.timer)
            block = PairBlock(lower, upper, lower_ms, upper_ms)
            pooled = self.links.setdefault((lower, upper), ([], []))
            pooled[0].extend(lower_ms)
            pooled[1].extend(upper_ms)
            self.size_ms[lower] = float(np.median(lower_ms))
            self.size_ms[upper] = float(np.median(upper_ms))
            if upper == BERT_BASE:
                self.reference_ms.extend(upper_ms)
            new.append(block)
        self.blocks += new
        return new

    def nearest(self, probe_ms: float) -> Arch:
        """The rung whose latency is nearest `probe_ms` on a log scale."""
        return min(self.rungs, key=lambda a: abs(np.log(self.size_ms[a] / probe_ms)))

    def time_arch(self, arch: Arch, runner: Runner, anchor: Arch | str | None = None) -> PairBlock:
        """Warm `runner` up (at least once: the fastest warm-up run picks the anchor unless `anchor` is given, as
        for the later passes of a model), then time it beside its anchor."""
        probe_ms = min(runner.time_once(self.timer) for _ in range(max(1, self.warmup)))
        anchor = self.nearest(probe_ms) if anchor is None else Arch.parse(anchor)
        if anchor not in self.runners:
            raise UserError(f"{anchor} is not an anchor of this ladder ({[str(a) for a in self.rungs]})")
        anchor_ms, model_ms = time_paired(self.runners[anchor], runner, min_rounds=self.min_rounds,
                                          max_rounds=self.max_rounds, budget_ms=self.budget_ms, timer=self.timer)
        return PairBlock(arch, anchor, model_ms, anchor_ms)

    def chain(self) -> dict[Arch, float]:
        return chain_ratios(self.links, self.statistic)

    def record(self, block: PairBlock, common: tuple) -> LatencyRecord:
        return anchored_record(block, self.chain(), float(np.median(self.reference_ms)), common, self.statistic)

    def reference_record(self, common: tuple) -> LatencyRecord:
        stats = summarize(self.reference_ms)
        return LatencyRecord(BERT_BASE, stats.median_ms, stats.iqr_ms, stats.repeats, *common, is_reference=True,
                             samples_ms=list(self.reference_ms), ratio=1.0, raw_median_ms=stats.median_ms)

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()


def anchored_record(block: PairBlock, chain: dict[Arch, float], reference_ms: float, common: tuple,
                    statistic: str = DEFAULT_STATISTIC, is_reference: bool = False) -> LatencyRecord:
    """The record of one pair block: ratio to BERT-base = (model / anchor) x (anchor / BERT-base);
    median_ms = ratio x `reference_ms` (BERT-base's raw median in the same campaign)."""
    if block.anchor not in chain:
        raise UserError(f"anchor {block.anchor} of {block.arch} is not chained to BERT-base; its calibration is "
                        "missing")
    anchor_ratio = block.ratio(statistic)
    ratio = anchor_ratio * chain[block.anchor]
    stats = summarize(block.model_ms)
    return LatencyRecord(block.arch, ratio * reference_ms, stats.iqr_ms, stats.repeats, *common,
                         is_reference=is_reference, samples_ms=list(block.model_ms), ratio=ratio,
                         anchor=str(block.anchor), anchor_ratio=anchor_ratio,
                         anchor_samples_ms=list(block.anchor_ms), raw_median_ms=stats.median_ms)
