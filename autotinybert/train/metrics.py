"""The run's metrics file: one JSON line per logged step and per evaluation (rank 0 writes it), optionally
mirrored to TensorBoard.

    {"event": "step", "step": 12, "loss": 4.31, "lr": 0.0004, "tokens": 3011, "seconds": 0.41, ..., "archs": [[...]]}
    {"event": "eval", "step": 200, "val_loss_max": 4.02, "val_loss_min": 4.87, "arch_max": "...", ...}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL of step and eval records; a no-op unless `enabled` (rank 0). On resume, the records after
    the checkpoint's step are dropped first, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, start_step: int, enabled: bool, tensorboard: bool = False):
        self.handle = None
        self.writer = None
        if not enabled:
            return
        if path.exists():  # keep only what the resumed state has already seen
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start_step]
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        self.handle = open(path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def _write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def step(self, step: int, *, loss: float, lr: float, tokens: int, seconds: float, archs: list,
             terms: dict[str, float] | None = None) -> None:
        """`terms`: the loss's parts, unweighted (kd: kd_attention, kd_hidden), written beside `loss`."""
        if self.handle is None:
            return
        self._write({"event": "step", "step": step, "loss": loss, **(terms or {}), "lr": lr, "tokens": tokens,
                     "seconds": round(seconds, 4), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                     "archs": archs, "time": time.time()})
        if self.writer:
            self.writer.add_scalar("train/loss", loss, step)
            for name, value in (terms or {}).items():
                self.writer.add_scalar(f"train/{name}", value, step)
            self.writer.add_scalar("train/lr", lr, step)

    def eval(self, step: int, values: dict[str, Any]) -> None:
        if self.handle is None:
            return
        self._write({"event": "eval", "step": step, **values, "time": time.time()})
        if self.writer:
            for key, value in values.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.writer:
            self.writer.close()
