"""`autotinybert export`: a model folder to ONNX (fp32, and INT8 by ONNX Runtime's dynamic quantization)."""

from __future__ import annotations

from typing import Literal

from ..config import Config, Field, PathStr, path_field
from . import Command


class ExportConfig(Config):
    """Export a save_pretrained model folder (extracted, further-trained or fine-tuned) to MODEL_DIR/model.onnx with
    torch.onnx.export (dynamo): inputs input_ids, attention_mask, token_type_ids with dynamic batch and sequence
    axes, outputs of the model's head. fp32 parity with the eager model is checked on two batch sizes and lengths;
    quantize=int8 also writes model_int8.onnx (ONNX Runtime dynamic quantization). MODEL_DIR/onnx.json records
    the result."""

    model: PathStr = path_field("", positional=True, min_length=1)
    """Model folder (config.json + weights)."""
    format: Literal["onnx"] = "onnx"
    """Export format."""
    quantize: Literal["int8"] | None = None
    """int8: also write model_int8.onnx (weights int8, activations quantized at run time)."""
    per_channel: bool = True
    """INT8 weights with one scale per output channel (false: one per tensor)."""
    reduce_range: bool | None = None
    """INT8 weights in 7 bits (unset: exactly on an x86 CPU without VNNI, whose int8 kernel saturates at 8 bits)."""
    head: Literal["auto", "mlm", "sequence-classification", "question-answering", "base"] = "auto"
    """Which head to export (auto: the class the folder's config names)."""
    atol: float = Field(1e-4, gt=0)
    """Largest |ONNX - eager| accepted for the fp32 graph."""
    as_json: bool = False
    """Print the result as JSON."""


def run(config: ExportConfig) -> int:
    import json

    from ..export import export_folder

    result = export_folder(config.model, format=config.format, quantize=config.quantize,
                           per_channel=config.per_channel, reduce_range=config.reduce_range,
                           head=config.head, atol=config.atol)
    if config.as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    shapes = ", ".join(f"batch {s['batch']} x {s['seq_len']} tokens" for s in result.parity["shapes"])
    print(f"wrote {result.onnx} ({result.head} head, opset {result.opset}); fp32 max |ONNX - eager| = "
          f"{result.parity['max_abs_diff']:.2e} over {shapes}")
    if result.int8:
        print(f"wrote {result.int8} (dynamic INT8, {'per-channel' if result.per_channel else 'per-tensor'}"
              f"{', 7-bit' if result.reduce_range else ''} weights; "
              f"runs; max |INT8 - eager| = {result.int8_max_abs_diff:.3g}: score it on a task to judge it)")
    return 0


COMMANDS = [Command("export", "export a model folder to ONNX (fp32 and, with quantize=int8, INT8)",
                    f"{__name__}:ExportConfig", run,
                    examples=("autotinybert export runs/best",
                              "autotinybert export runs/finetuned/sst2/model quantize=int8"))]
