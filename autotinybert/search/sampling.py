"""Bounded samplers of admissible architectures: in the space, predicted latency inside the window.

Nothing here enumerates the space: candidates are drawn, and every loop has a bound. When a bound is hit the
error says which latencies the space can reach, so the user can pick a feasible target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection

import numpy as np

from ..arch import Arch
from ..space import SearchSpace
from .target import LatencyModel, LatencyWindow, TargetError

DEFAULT_MAX_DRAWS = 20_000  # draws per admissible candidate before giving up
FAST_RULE = "1.6 dm <= df <= 1.9 dm and 0.7 dm <= dqkv <= dm"


class InfeasibleTargetError(TargetError):
    """No admissible architecture could be found for the latency window."""


@dataclass
class SamplerStats:
    """What the sampler did, to explain a search: draws made and why draws were rejected."""

    draws: int = 0
    rejected_latency: int = 0
    rejected_duplicate: int = 0
    rejected_rule: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class AdmissibleSampler:
    """Draws architectures of `space` whose predicted latency lies in `window`.

    Predictions are cached per arch. `seen_ms` tracks the lowest and highest predicted latency met so far, which
    an infeasibility error reports together with the latencies of the space's smallest and largest archs.
    """

    space: SearchSpace
    predictor: LatencyModel
    window: LatencyWindow
    max_draws: int = DEFAULT_MAX_DRAWS
    stats: SamplerStats = field(default_factory=SamplerStats)
    _cache: dict[Arch, float] = field(default_factory=dict, repr=False)
    _seen_low: float = math.inf
    _seen_high: float = -math.inf

    def __post_init__(self) -> None:
        if isinstance(self.max_draws, bool) or not isinstance(self.max_draws, int) or self.max_draws <= 0:
            raise TargetError(f"max_draws must be a positive integer, got {self.max_draws!r}")

    # ----- latency ------------------------------------------------------------------------------
    def latency(self, arch: Arch) -> float:
        """Predicted latency in ms (cached)."""
        ms = self._cache.get(arch)
        if ms is None:
            ms = float(self.predictor.predict(arch))
            if not math.isfinite(ms) or ms <= 0:
                raise TargetError(f"latency predictor returned {ms!r} ms for {arch}; expected a positive number")
            self._cache[arch] = ms
            self._seen_low, self._seen_high = min(self._seen_low, ms), max(self._seen_high, ms)
        return ms

    def admissible(self, arch: Arch) -> bool:
        return self.space.contains(arch) and self.window.admits(self.latency(arch))

    def reachable_description(self) -> str:
        """Which latencies the space reaches: its min and max arch, and the range met while sampling."""
        lo_arch, hi_arch = self.space.min_arch, self.space.max_arch
        lo, hi = self.latency(lo_arch), self.latency(hi_arch)
        low, high = min(lo, self._seen_low), max(hi, self._seen_high)
        return (f"space '{self.space.name}' reaches predicted latencies {low:.3f}..{high:.3f} ms "
                f"(speedup {self.window.reference_ms / high:.2f}x..{self.window.reference_ms / low:.2f}x; smallest arch "
                f"{lo_arch}: {lo:.3f} ms, largest arch {hi_arch}: {hi:.3f} ms)")

    def check_feasible(self) -> None:
        """Fail fast when the window lies wholly outside the latencies of the space's smallest and largest archs."""
        lo, hi = self.latency(self.space.min_arch), self.latency(self.space.max_arch)
        if self.window.high_ms < min(lo, hi) or self.window.low_ms > max(lo, hi):
            raise InfeasibleTargetError(
                f"the latency target is out of reach: {self.window.describe()}, but {self.reachable_description()}. "
                f"Choose a target inside that range.")

    # ----- sampling -----------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, exclude: Collection[Arch] = (), layers: int | None = None,
               accept: Callable[[Arch], bool] | None = None,
               draw: Callable[[np.random.Generator], Arch | None] | None = None) -> Arch:
        """One admissible arch not in `exclude`, drawn uniformly per dimension (or by `draw`), at most `max_draws` tries.

        `layers` fixes the layer count; `accept` adds a rule (its rejections are counted as ``rejected_rule``).
        """
        for _ in range(self.max_draws):
            self.stats.draws += 1
            arch = draw(rng) if draw is not None else self.space.sample(rng, layers=layers)
            if arch is None or (accept is not None and not accept(arch)):
                self.stats.rejected_rule += 1
                continue
            if arch in exclude:
                self.stats.rejected_duplicate += 1
                continue
            if not self.window.admits(self.latency(arch)):
                self.stats.rejected_latency += 1
                continue
            return arch
        where = f" with {layers} layer(s)" if layers is not None else ""
        raise InfeasibleTargetError(
            f"no new admissible architecture{where} found in {self.max_draws} draws: {self.window.describe()}; "
            f"{self.reachable_description()}; {len(exclude)} arch(s) already taken. Widen the window (window=[LOW,HIGH]), "
            f"pick a target inside the reachable range, ask for fewer candidates, or raise max_draws.")


def sample_many(sampler: AdmissibleSampler, rng: np.random.Generator, n: int, exclude: Collection[Arch] = (),
                draw: Callable[[np.random.Generator], Arch | None] | None = None,
                accept: Callable[[Arch], bool] | None = None, layers: int | None = None) -> list[Arch]:
    """Up to `n` distinct admissible archs not in `exclude`, from at most ``sampler.max_draws`` draws in all
    (fewer when the window holds fewer; never raises for that)."""
    found: list[Arch] = []
    stats = sampler.stats
    for _ in range(sampler.max_draws):
        if len(found) >= n:
            break
        stats.draws += 1
        arch = draw(rng) if draw is not None else sampler.space.sample(rng, layers=layers)
        if arch is None or (accept is not None and not accept(arch)):
            stats.rejected_rule += 1
        elif arch in exclude or arch in found:
            stats.rejected_duplicate += 1
        elif not sampler.window.admits(sampler.latency(arch)):
            stats.rejected_latency += 1
        else:
            found.append(arch)
    return found


# ----- the fast development rule (paper §4.4) ----------------------------------------------------
def satisfies_fast_rule(arch: Arch) -> bool:
    """1.6 dm <= df <= 1.9 dm and 0.7 dm <= dqkv <= dm (integer arithmetic, so grid values on the bounds count)."""
    return 16 * arch.hidden <= 10 * arch.ffn <= 19 * arch.hidden and 7 * arch.hidden <= 10 * arch.qkv <= 10 * arch.hidden


def fast_rule_hidden_sizes(space: SearchSpace) -> list[int]:
    """The hidden sizes of `space` for which some ffn and qkv on its grid satisfy the fast rule (empty: the rule
    has no arch in this space, so a `fast` search cannot run there)."""
    if space.attention == "heads":
        qkvs = [space.head_size * h for h in space.heads.values()]
    else:
        qkvs = list(space.qkv.values())
    ffns = space.ffn.values()
    return [h for h in space.hidden.values()
            if any(16 * h <= 10 * f <= 19 * h for f in ffns) and any(7 * h <= 10 * q <= 10 * h for q in qkvs)]


def fast_rule_draw(space: SearchSpace, layers: int) -> Callable[[np.random.Generator], Arch | None]:
    """A draw that puts ffn and qkv straight into the rule's band for the drawn hidden size.

    Drawing ffn uniformly over the whole grid would hit the narrow 1.6..1.9 dm band rarely; drawing inside the
    band keeps the number of draws small. A hidden size with no grid value in a band gives None, which the
    sampler counts as a rule rejection and redraws.
    """
    if space.attention == "heads":
        attention = [(h, space.head_size * h) for h in space.heads.values()]
    else:
        attention = [(space.heads.low, q) for q in space.qkv.values()]
    ffn = space.ffn
    bands: dict[int, tuple[int, int, list[tuple[int, int]]]] = {}
    for hidden in space.hidden.values():
        # grid indices i with 1.6 h <= ffn.low + i * step <= 1.9 h, in integer arithmetic
        first = max(0, -(-(16 * hidden - 10 * ffn.low) // (10 * ffn.step)))
        last = min(ffn.count - 1, (19 * hidden - 10 * ffn.low) // (10 * ffn.step))
        options = [(h, q) for h, q in attention if 7 * hidden <= 10 * q <= 10 * hidden]
        bands[hidden] = (first, last, options)

    def draw(rng: np.random.Generator) -> Arch | None:
        hidden = space.hidden.sample(rng)
        first, last, options = bands[hidden]
        if first > last or not options:
            return None
        heads, qkv = options[int(rng.integers(len(options)))]
        return Arch(layers, hidden, ffn.at(first + int(rng.integers(last - first + 1))), heads, qkv)

    return draw
