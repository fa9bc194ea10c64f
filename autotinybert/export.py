"""ONNX export of a model folder, INT8 dynamic quantization, and the ONNX Runtime session both are run with.

    result = export_folder("runs/best", quantize="int8")   # runs/best/model.onnx, runs/best/model_int8.onnx
    result.parity["max_abs_diff"]                          # fp32 ONNX vs eager, over two batch sizes and lengths

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opset 18. Measured against the
alternatives on this model family (see docs/latency.md): Optimum's exporter knows only the model types it ships
configs for (not ``autotinybert``) and wraps the same torch exporter, so it adds a dependency without changing
the graph; the dynamo exporter gives fp32 parity of ~1e-8 and dynamic batch and sequence axes from
``torch.export.Dim``. The graph has the inputs ``input_ids``, ``attention_mask`` and ``token_type_ids``
((batch, sequence), int64) and the head's outputs (`HEAD_OUTPUTS`).

INT8: ONNX Runtime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`): weights of every MatMul /
Gemm to signed int8 (per output channel by default), activations quantized on the fly; no calibration data.
On an x86 CPU without VNNI the weights use 7 bits (ORT's ``reduce_range``; `needs_reduced_range`): there the
u8 x s8 kernel adds pairs of products in int16 (VPMADDUBSW), which saturates with full-range int8 weights. Measured
on an AVX2-only AMD EPYC (2-32-64-2-16 MLM, seeded init): max |INT8 - eager| 0.115 per-channel 8-bit, 0.008 7-bit.

Session: one place builds the `InferenceSession` for export checks, latency and the benchmark, with
ONNX Runtime's ``SkipLayerNormFusion`` disabled: on this graph the fused SkipLayerNormalization CPU kernel was
slower than the plain Add + LayerNormalization it replaces (4-256-1024-4-256, 1 thread, 128 tokens: INT8
7.3 -> 5.6 ms, fp32 12.6 -> 11.0 ms).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import UserError

OPSET = 18
ONNX_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
RECORD_NAME = "onnx.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
HEAD_OUTPUTS = {
    "mlm": ("logits",),
    "sequence-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "base": ("last_hidden_state", "pooler_output"),
}
Head = Literal["mlm", "sequence-classification", "question-answering", "base"]
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)  # measured slower on CPU, see the module docstring
PARITY_SHAPES = ((1, 7), (3, 33))  # (batch, sequence) pairs the parity check runs; neither is the export shape
EXPORT_SHAPE = (2, 16)


class ExportError(UserError):
    """A model that cannot be exported, or an export that does not match the eager model."""


def head_of(model) -> Head:
    """The head of a loaded model, from its class name (AutoTinyBert* and transformers' BERT family alike)."""
    name = type(model).__name__
    for suffix, head in (("ForMaskedLM", "mlm"), ("ForSequenceClassification", "sequence-classification"),
                         ("ForQuestionAnswering", "question-answering")):
        if name.endswith(suffix):
            return head  # type: ignore[return-value]
    if name.endswith("Model"):
        return "base"
    raise ExportError(f"cannot tell the head of {name}; export a *Model, *ForMaskedLM, *ForSequenceClassification or "
                      f"*ForQuestionAnswering")


def load_for_export(model_dir: str | Path, head: str = "auto"):
    """The model of a save_pretrained folder in eval mode, with the class its config names (or `head`)."""
    import autotinybert  # noqa: F401  (registers model_type "autotinybert" with the Auto classes)
    from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification)

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ExportError(f"{path} is not a model folder (no config.json); give a save_pretrained folder")
    classes = {"mlm": AutoModelForMaskedLM, "sequence-classification": AutoModelForSequenceClassification,
               "question-answering": AutoModelForQuestionAnswering, "base": AutoModel}
    if head == "auto":
        config = AutoConfig.from_pretrained(str(path))
        names = getattr(config, "architectures", None) or []
        head = next((h for n in names for s, h in (("ForMaskedLM", "mlm"),
                                                    ("ForSequenceClassification", "sequence-classification"),
                                                    ("ForQuestionAnswering", "question-answering"))
                     if n.endswith(s)), "base")
    if head not in classes:
        raise ExportError(f"unknown head {head!r}; choose one of {sorted(classes)} or auto")
    try:
        model = classes[head].from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise ExportError(f"cannot load {path} as {head}: {err}") from None
    return model.eval()


def exportable(model, head: str):
    """`model` wrapped so forward takes the three inputs positionally and returns the head's outputs as a tuple."""
    import torch

    outputs = HEAD_OUTPUTS[head]

    class Exportable(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # each (B, T) int64
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             return_dict=True)
            return tuple(out[name] for name in outputs)

    return Exportable(model).eval()


def example_inputs(batch: int, seq_len: int, vocab_size: int, *, seed: int = 0, pad_last: bool = True,
                   type_vocab_size: int = 2) -> dict[str, np.ndarray]:
    """Seeded int64 inputs; the last sequence is padded over its second half (so the mask matters)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, (batch, seq_len), dtype=np.int64)  # (B, T)
    mask = np.ones((batch, seq_len), dtype=np.int64)
    if pad_last and seq_len > 1:
        mask[-1, seq_len // 2:] = 0
    types = np.zeros((batch, seq_len), dtype=np.int64)
    if type_vocab_size > 1:
        types[:, seq_len // 2:] = 1  # a sentence pair's second segment
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def export_onnx_model(model, path: str | Path, *, head: str | None = None, opset: int = OPSET) -> Path:
    """Write `model` (eval mode) to `path` with dynamic batch and sequence axes; returns `path`."""
    import torch

    head = head or head_of(model)
    config = model.config
    feed = example_inputs(*EXPORT_SHAPE, min(int(config.vocab_size), 1000),
                          type_vocab_size=int(getattr(config, "type_vocab_size", 2)))
    args = tuple(torch.from_numpy(feed[name]) for name in INPUT_NAMES)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(exportable(model, head), args, str(path), input_names=list(INPUT_NAMES),
                              output_names=list(HEAD_OUTPUTS[head]), dynamic_shapes=dynamic, opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        except Exception as err:  # the exporter raises many types; the user needs to know which model failed
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {err}") from err
    return path


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names of the x86 int8 dot-product units


def needs_reduced_range(machine: str | None = None, cpu_flags: set[str] | None = None) -> bool:
    """Whether INT8 weights should use 7 bits on this CPU: an x86 CPU without VNNI, whose u8 x s8 kernel sums pairs
    of products in int16 and saturates with 8-bit weights. `machine` / `cpu_flags` default to this machine's
    (`platform.machine()`, the flags of /proc/cpuinfo); where the flags cannot be read, an x86 CPU gets 7 bits (a
    small rounding cost instead of a possible overflow)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's int8 dot products accumulate in int32
    if cpu_flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
        cpu_flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return not any(flag in cpu_flags for flag in VNNI_FLAGS)


def quantize_int8(source: str | Path, target: str | Path, *, per_channel: bool = True,
                  reduce_range: bool | None = None) -> Path:
    """ONNX Runtime dynamic quantization of `source` (MatMul/Gemm weights to int8) into `target`; `reduce_range`
    (7-bit weights) defaults to `needs_reduced_range()` of this machine."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if reduce_range is None:
        reduce_range = needs_reduced_range()

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on the root logger for every call
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    return Path(target)


def ort_session(path: str | Path, *, threads: int = 1, device: str = "cpu"):
    """The `onnxruntime.InferenceSession` every part of the toolkit runs an exported model with."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX Runtime is not installed: pip install 'autotinybert[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers,
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def session_feed(session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feed` restricted to the session's inputs (a graph may have dropped an unused input)."""
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}


def parity(model, onnx_path: str | Path, *, head: str | None = None,
           shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES, seed: int = 0) -> dict[str, Any]:
    """Max |ONNX - eager| over every output at each (batch, sequence) of `shapes` (padded last row)."""
    import torch

    head = head or head_of(model)
    session = ort_session(onnx_path)
    config = model.config
    worst, per_shape = 0.0, []
    for i, (batch, seq_len) in enumerate(shapes):
        feed = example_inputs(batch, seq_len, int(config.vocab_size), seed=seed + i,
                              type_vocab_size=int(getattr(config, "type_vocab_size", 2)))
        got = session.run(list(HEAD_OUTPUTS[head]), session_feed(session, feed))
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=True)
        diffs = []
        for name, value in zip(HEAD_OUTPUTS[head], got):
            expected = out[name].float().numpy()
            if value.shape != expected.shape:
                raise ExportError(f"ONNX output {name} has shape {value.shape}, eager {expected.shape} at batch {batch}, "
                                  f"length {seq_len}: the dynamic axes are wrong")
            diffs.append(float(np.abs(value - expected).max()))
        per_shape.append({"batch": batch, "seq_len": seq_len, "max_abs_diff": max(diffs)})
        worst = max(worst, max(diffs))
    return {"max_abs_diff": worst, "shapes": per_shape}


@dataclass
class ExportResult:
    """What `export_folder` wrote and how the fp32 graph compares with the eager model."""

    model_dir: str
    head: str
    onnx: str
    int8: str | None
    per_channel: bool | None
    opset: int
    parity: dict[str, Any]
    reduce_range: bool | None = None  # INT8 weights in 7 bits (see `needs_reduced_range`)
    int8_runs: bool | None = None  # the INT8 file loaded and ran on both parity shapes
    int8_max_abs_diff: float | None = None  # vs the eager model (an accuracy check needs a task: see the benchmark)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_folder(model_dir: str | Path, *, format: str = "onnx", quantize: str | None = None,
                  per_channel: bool = True, reduce_range: bool | None = None, head: str = "auto", atol: float = 1e-4,
                  opset: int = OPSET) -> ExportResult:
    """Export a save_pretrained folder to ``model.onnx`` (and ``model_int8.onnx`` with ``quantize="int8"``) in that
    folder, check fp32 parity (raise `ExportError` above `atol`), run the INT8 file, write ``onnx.json``.
    `reduce_range` None: 7-bit INT8 weights exactly when this CPU needs them (`needs_reduced_range`)."""
    import onnx
    import onnxruntime
    import torch

    from .io import atomic_write_json

    if format != "onnx":
        raise ExportError(f"unknown export format {format!r}; the only format is onnx")
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; choose int8 or leave it unset")
    started = time.perf_counter()
    folder = Path(model_dir)
    model = load_for_export(folder, head)
    chosen = head_of(model)
    onnx_path = export_onnx_model(model, folder / ONNX_NAME, head=chosen, opset=opset)
    check = parity(model, onnx_path, head=chosen)
    if not check["max_abs_diff"] <= atol:
        raise ExportError(f"the ONNX graph of {folder} differs from the eager model by {check['max_abs_diff']:.3g} "
                          f"(> atol {atol:g}); {ONNX_NAME} was written for inspection")
    result = ExportResult(model_dir=str(folder), head=chosen, onnx=str(onnx_path), int8=None, per_channel=None,
                          opset=opset, parity=check,
                          versions={"torch": torch.__version__, "onnx": onnx.__version__,
                                    "onnxruntime": onnxruntime.__version__})
    if quantize == "int8":
        if reduce_range is None:
            reduce_range = needs_reduced_range()
        int8_path = quantize_int8(onnx_path, folder / INT8_NAME, per_channel=per_channel, reduce_range=reduce_range)
        int8_check = parity(model, int8_path, head=chosen)
        result.int8, result.per_channel, result.reduce_range = str(int8_path), per_channel, reduce_range
        result.int8_runs, result.int8_max_abs_diff = True, int8_check["max_abs_diff"]
    result.seconds = round(time.perf_counter() - started, 2)
    atomic_write_json(folder / RECORD_NAME, result.to_dict())
    return result


def read_record(model_dir: str | Path) -> dict[str, Any] | None:
    """The ``onnx.json`` an export left in a model folder, or None."""
    path = Path(model_dir) / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None
