"""The latency target of a search and its admissible window.

A search depends on the latency predictor only through `LatencyModel`: ``predict(arch) -> ms`` and
``reference_ms`` (BERT-base's latency on the same machine). `autotinybert.latency.LatencyPredictor` is one; a test
or a user may pass any object with those two members (e.g. an analytic FLOP count scaled to milliseconds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from ..arch import Arch
from ..errors import UserError

DEFAULT_WINDOW = (0.85, 1.1)  # the official code keeps predicted latency within [0.85, 1.1] x target


class TargetError(UserError):
    """A latency target or window that cannot be used."""


@runtime_checkable
class LatencyModel(Protocol):
    """What a search needs from a latency predictor."""

    reference_ms: float

    def predict(self, arch: Arch) -> float:
        """Predicted latency of `arch` in milliseconds."""
        ...


def check_latency_model(predictor: object) -> LatencyModel:
    """Return `predictor` if it has ``predict(arch)`` and a positive ``reference_ms``; a `TargetError` otherwise."""
    if not callable(getattr(predictor, "predict", None)):
        raise TargetError(f"latency predictor {type(predictor).__name__} has no predict(arch) method")
    ref = getattr(predictor, "reference_ms", None)
    if isinstance(ref, bool) or not isinstance(ref, (int, float)) or not math.isfinite(ref) or ref <= 0:
        raise TargetError(f"latency predictor {type(predictor).__name__} needs a positive reference_ms "
                          f"(BERT-base latency on the same machine); got {ref!r}")
    return predictor  # type: ignore[return-value]


@dataclass(frozen=True)
class LatencyWindow:
    """Target latency and the admissible window ``[low * target_ms, high * target_ms]``."""

    target_ms: float
    reference_ms: float
    low: float = DEFAULT_WINDOW[0]
    high: float = DEFAULT_WINDOW[1]

    def __post_init__(self) -> None:
        for name in ("target_ms", "reference_ms", "low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise TargetError(f"latency window {name} must be a positive number, got {value!r}")
        if self.low > self.high:
            raise TargetError(f"latency window low factor {self.low} is above high factor {self.high} "
                              f"(give window=[LOW,HIGH] with LOW <= HIGH, e.g. window=[0.85,1.1])")

    @classmethod
    def build(cls, predictor: LatencyModel, *, speedup: float | None = None, latency_ms: float | None = None,
              window: tuple[float, float] = DEFAULT_WINDOW) -> LatencyWindow:
        """From exactly one of `speedup` (target = reference_ms / speedup) or `latency_ms`."""
        check_latency_model(predictor)
        if (speedup is None) == (latency_ms is None):
            raise TargetError("give exactly one latency target: speedup (e.g. speedup=10) or latency_ms "
                              "(e.g. latency_ms=8.5)")
        low, high = _window_pair(window)
        ref = float(predictor.reference_ms)
        if speedup is not None:
            if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not speedup > 0:
                raise TargetError(f"speedup must be a positive number (x faster than BERT-base), got {speedup!r}")
            return cls(ref / float(speedup), ref, low, high)
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not latency_ms > 0:
            raise TargetError(f"latency_ms must be a positive number of milliseconds, got {latency_ms!r}")
        return cls(float(latency_ms), ref, low, high)

    @property
    def low_ms(self) -> float:
        return self.low * self.target_ms

    @property
    def high_ms(self) -> float:
        return self.high * self.target_ms

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.target_ms

    def admits(self, latency_ms: float) -> bool:
        return self.low_ms <= latency_ms <= self.high_ms

    def describe(self) -> str:
        return (f"target {self.target_ms:.3f} ms ({self.speedup:.2f}x faster than BERT-base at "
                f"{self.reference_ms:.3f} ms); admissible window [{self.low_ms:.3f}, {self.high_ms:.3f}] ms "
                f"= [{self.low}, {self.high}] x target")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "low_ms": self.low_ms, "high_ms": self.high_ms, "speedup": self.speedup}


def _window_pair(window) -> tuple[float, float]:
    try:
        low, high = window
    except (TypeError, ValueError):
        raise TargetError(f"window must be two factors (low, high), e.g. (0.85, 1.1); got {window!r}") from None
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise TargetError(f"window factors must be positive numbers, got {window!r}")
    if low > high:
        raise TargetError(f"window low factor {low} is above high factor {high}")
    return float(low), float(high)


@dataclass(frozen=True)
class FlopsLatencyModel:
    """An analytic `LatencyModel`: latency proportional to the encoder's multiply-adds per sequence.

    ``predict(arch) = reference_ms * macs(arch) / macs(BERT-base)``, with per layer and token
    ``4 h q`` (Q, K, V and output projections: 3 h q + q h), ``2 h f`` (FFN) and ``2 T q`` (attention scores and
    weighted sum at sequence length T). A rough stand-in for a measured predictor: no fixed overheads, no cache
    effects. Useful for dry runs and tests; use `autotinybert.latency.LatencyPredictor` for real targets.
    """

    reference_ms: float = 100.0
    seq_len: int = 128

    def macs(self, arch: Arch) -> int:
        h, f, q = arch.hidden, arch.ffn, arch.qkv
        return arch.layers * self.seq_len * (4 * h * q + 2 * h * f + 2 * self.seq_len * q)

    def predict(self, arch: Arch) -> float:
        from ..arch import BERT_BASE

        return self.reference_ms * self.macs(arch) / self.macs(BERT_BASE)
