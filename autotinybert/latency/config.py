"""Typed latency configs: how to time (`LatencySettings`), how to fit the predictor (`PredictorSettings`), and
the three `latency` commands built on them."""

from __future__ import annotations

from typing import Any, Literal


from ..config import Config, Field, NameList, PathList, PathStr, path_field, positional_field


class LatencySettings(Config):
    """How each model is timed."""

    backend: Literal["torch", "onnxruntime", "onnxruntime-int8"] = "torch"
    """torch: eager PyTorch; onnxruntime: ONNX Runtime on the model's ONNX export (as `autotinybert export` writes
    it); onnxruntime-int8: the same after dynamic INT8 quantization. BERT-base is timed through the same backend."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the models run."""
    threads: int = Field(1, gt=0)
    """Intra-op threads (1: the paper's single CPU)."""
    batch: int = Field(1, gt=0)
    """Sequences per forward pass."""
    seq_len: int = Field(128, gt=0)
    """Tokens per sequence."""
    warmup: int = Field(2, ge=0)
    """Untimed runs per model first."""
    repeats: int = Field(7, gt=0)
    """Timed rounds per model (anchored: at least this many; interleaved: exactly this many, median reported)."""
    clock: Literal["wall", "cpu"] = "wall"
    """wall: elapsed time (use on the deployment machine); cpu: the thread's CPU time, robust on a busy machine."""
    protocol: Literal["anchored", "interleaved"] = "anchored"
    """anchored: each model timed in rounds beside the anchor model nearest its size, anchors chained to BERT-base,
    so speedups are ratios of times taken milliseconds apart (see docs/latency.md); interleaved: the old protocol
    (raw medians, BERT-base timed at intervals)."""
    budget_s: float = Field(1.5, ge=0)
    """anchored: timed seconds per model (its runs and its anchor's, over all passes) after `repeats` rounds per
    pass; small models get more rounds. Wall time per model is about twice this (each timed run follows an untimed
    one)."""
    max_repeats: int = Field(400, gt=0)
    """anchored: at most this many rounds per model (per pass)."""
    passes: int = Field(3, gt=0)
    """anchored: passes over the models, each model built anew and timed for budget_s / passes in each, the anchors
    re-calibrated before each pass; a model's samples are pooled over the passes, so its latency averages the
    machine's state over the whole campaign instead of one moment of it (see docs/latency.md)."""

    def timing_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `measure_latency` these settings stand for."""
        return self.model_dump(include=set(LatencySettings.model_fields))


class PredictorSettings(Config):
    """How the latency predictor is fitted."""

    kind: Literal["auto", "analytic", "mlp", "boosted"] = "auto"
    """analytic cost model, MLP, boosted (the analytic model corrected by gradient-boosted trees), or auto: the best
    by cross-validated MAPE."""
    folds: int = Field(5, gt=1)
    """Cross-validation folds."""


class MeasureConfig(LatencySettings):
    """`autotinybert latency measure`: sample archs from a space and append their latency to a JSONL file; the
    anchors and BERT-base are re-calibrated (anchored protocol) or BERT-base re-measured (interleaved) every
    `reference_every` archs. Rerun to resume."""

    space: str = Field("cpu-mlm", json_schema_extra={"path": "if_exists"})
    """Search space preset or YAML file."""
    n: int = Field(100, gt=0)
    """Archs in the dataset."""
    out: PathStr = path_field("", min_length=1)
    """JSONL file (appended to; archs already in it are skipped)."""
    reference_every: int = Field(25, gt=0)
    """Re-calibrate the anchors against BERT-base (or re-measure BERT-base) every N archs."""
    seed: int = Field(0, ge=0)
    """Seed of the sampled archs and inputs."""
    progress: bool = True
    """Show a progress bar."""


class FitConfig(PredictorSettings):
    """`autotinybert latency fit`: fit the analytic cost model, the MLP and the boosted model on latency files, keep
    the best by
    cross-validated MAPE, save it (JSON, or safetensors for a .safetensors path)."""

    files: PathList = path_field(default_factory=list, positional=True, min_length=1)
    """Latency JSONL files from `latency measure` (same settings)."""
    out: PathStr = path_field("", min_length=1)
    """Predictor file (.json or .safetensors)."""
    test: PathList = path_field(default_factory=list)
    """Held-out latency files to report metrics on."""
    seed: int = Field(0, ge=0)
    """Seed of the folds and the MLP."""


class BenchConfig(LatencySettings):
    """`autotinybert latency bench`: time archs and BERT-base in one run (anchored by default); print ms, IQR,
    rounds and speedup (beside a predictor's numbers when one is given)."""

    archs: NameList = positional_field(default_factory=list, min_length=1)
    """Architectures as L-dm-df-h-dqkv."""
    warmup: int = Field(3, ge=0)
    """Untimed runs per model first."""
    repeats: int = Field(10, gt=0)
    """Timed rounds per model (anchored: at least this many)."""
    predictor: PathStr | None = path_field(None)
    """Also print this predictor's ms and speedup."""
    seed: int = Field(0, ge=0)
    """Seed of the inputs."""
    as_json: bool = False
    """Print the records as JSON."""

