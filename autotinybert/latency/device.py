"""The device record: which machine and which settings a latency was measured on, and how to compare two.

A record has two kinds of fields:

* **settings** (``backend``, ``device``, ``threads``, ``batch``, ``seq_len``, ``clock``): the request itself. A latency
  measured at 1 thread says nothing about 4 threads, so a predictor asked about other settings raises
  `DeviceMismatchError`.
* **machine** (``cpu``, ``cpu_count``, ``gpu``, ``torch``, ``onnxruntime``, ``machine``): the hardware and the
  software stack. A different CPU model or a new torch release changes latencies by some percent, but a user may
  knowingly reuse a predictor on a sibling machine, so these give a `DeviceMismatchWarning` (an error with
  ``strict=True``). The message tells the user to re-measure (``autotinybert latency measure``) on this machine.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any

from ..errors import UserError

SETTING_KEYS = ("backend", "device", "threads", "batch", "seq_len", "clock")
MACHINE_KEYS = ("cpu", "cpu_count", "gpu", "machine", "torch", "onnxruntime")
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
DEVICES = ("cpu", "cuda")
CLOCKS = ("wall", "cpu")


class DeviceMismatchError(UserError):
    """A predictor or latency file was measured with other settings (backend, device, threads, batch, length)."""


class DeviceMismatchWarning(UserWarning):
    """A predictor or latency file was measured on another machine or software version."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_settings(backend: str, device: str, threads: int, batch: int, seq_len: int, clock: str = "wall") -> None:
    """Raise `UserError` for a bad measurement request before anything is built."""
    if clock not in CLOCKS:
        raise UserError(f"unknown clock {clock!r}; choose 'wall' (elapsed time) or 'cpu' (the thread's CPU time)")
    if clock == "cpu" and (device != "cpu" or threads != 1):
        raise UserError("clock 'cpu' (thread CPU time) measures latency only for one thread on the CPU, where the "
                        "whole forward runs on the calling thread; use clock=wall with threads > 1 or CUDA")
    if backend not in BACKENDS:
        raise UserError(f"unknown latency backend {backend!r}; choose one of {list(BACKENDS)}")
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
    for name, value in (("threads", threads), ("batch", batch), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if seq_len > 512:
        raise UserError(f"seq_len {seq_len} exceeds BERT's 512 positions; use seq_len=512 or less")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but torch sees no CUDA GPU; use device=cpu")
    if backend.startswith("onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError(f"backend {backend!r} needs the onnx extras: pip install 'autotinybert[onnx]'") from None
        if device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("onnxruntime has no CUDAExecutionProvider here; install onnxruntime-gpu or use device=cpu")


def device_record(backend: str = "torch", device: str = "cpu", threads: int = 1, batch: int = 1,
                  seq_len: int = 128, clock: str = "wall") -> dict[str, Any]:
    """The record stored with every measurement and every predictor: settings plus this machine."""
    import torch

    record: dict[str, Any] = {"backend": backend, "device": device, "threads": threads, "batch": batch,
                              "seq_len": seq_len, "clock": clock, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                              "gpu": None, "machine": platform.machine(), "torch": torch.__version__,
                              "onnxruntime": None}
    if device == "cuda" and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    if backend.startswith("onnxruntime"):
        import onnxruntime

        record["onnxruntime"] = onnxruntime.__version__
    return record


def compare_records(saved: dict[str, Any], current: dict[str, Any], *, strict: bool = False,
                    what: str = "predictor") -> list[str]:
    """Compare a saved record with the current request/machine; returns the machine differences found.

    Settings differences raise `DeviceMismatchError`. Machine differences warn (`DeviceMismatchWarning`), or raise
    with ``strict=True``. Keys missing from either record are not compared.
    """
    settings = [f"{k}: {what} has {saved[k]!r}, request has {current[k]!r}"
                for k in SETTING_KEYS if k in saved and k in current and saved[k] != current[k]]
    if settings:
        raise DeviceMismatchError(
            f"the {what} was measured with other settings ({'; '.join(settings)}); latency does not transfer "
            "between settings: use the same settings or measure and fit a new one (autotinybert latency measure/fit)")
    machine = [f"{k}: {what} has {saved[k]!r}, this machine has {current[k]!r}"
               for k in MACHINE_KEYS if k in saved and k in current and saved[k] != current[k]]
    if machine:
        message = (f"the {what} was measured on another machine or software stack ({'; '.join(machine)}); "
                   "its milliseconds may be off by tens of percent here: re-measure on this machine "
                   "(autotinybert latency measure) for numbers you can trust")
        if strict:
            raise DeviceMismatchError(message)
        warnings.warn(message, DeviceMismatchWarning, stacklevel=3)
    return machine
