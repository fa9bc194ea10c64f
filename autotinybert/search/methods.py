"""How each search method proposes the architectures of one generation.

Proposals depend only on (seed, generation), the space, the latency window and the records of earlier
generations, never on evaluation order or worker count, so a resumed run re-derives exactly the same ones.

* ``evolved`` (paper Algorithm 2): generation 0 is sampled from the admissible set; each later slot is, with
  probability ``explore_prob``, a fresh admissible arch, otherwise a parent picked by roulette wheel on the
  previous generation's fitness (minus its minimum) and mutated on the grid (``SearchSpace.mutate``: each dimension
  with probability ``mutation_prob``; layers by +-1, other dimensions by up to ``mutation_steps`` grid steps).
  A child that is inadmissible or already taken is redrawn, at most ``max_redraws`` times; then the slot falls back
  to a fresh admissible arch.
* ``random``: the same number of candidates, every one a fresh admissible sample.
* ``fast`` (paper §4.4): one candidate per layer count that satisfies 1.6 dm <= df <= 1.9 dm and
  0.7 dm <= dqkv <= dm; of up to ``fast_pool`` such admissible draws (at most ``max_draws`` draws per layer
  count), the one whose predicted latency is closest to the target (it spends the latency budget most fully).
  Layer counts with no admissible rule arch are skipped and listed in the generation's stats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .. import seeding
from ..arch import Arch
from .sampling import (FAST_RULE, AdmissibleSampler, InfeasibleTargetError, SamplerStats, fast_rule_draw,
                       sample_many, satisfies_fast_rule)

METHODS = ("evolved", "random", "fast")
_PROPOSE_STREAM = 1  # generator streams: (seed, generation, stream)


@dataclass(frozen=True)
class Proposal:
    """One candidate of a generation and where it came from."""

    arch: Arch
    origin: str  # "sampled" | "explore" | "mutated" | "fallback" | "rule"
    parent: Arch | None = None


@dataclass
class GenerationPlan:
    """The candidates of one generation plus the counts that explain how they were found."""

    generation: int
    proposals: list[Proposal]
    stats: dict[str, int | list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodParams:
    """The knobs of the methods (defaults: paper Algorithm 2)."""

    population: int = 25
    mutation_prob: float = 0.5
    explore_prob: float = 0.5
    mutation_steps: int = 4
    max_redraws: int = 100
    fast_pool: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def generation_rng(seed: int, generation: int, stream: int = _PROPOSE_STREAM) -> np.random.Generator:
    """The generator for one generation's draws, seeded by (seed, generation, stream)."""
    return seeding.generation_rng(seed, generation, stream)


def roulette_select(fitness: Sequence[float], rng: np.random.Generator) -> int:
    """Index drawn with probability proportional to ``fitness - min(fitness)`` (uniform when all are equal).

    Non-finite fitness (a failed evaluation) gets weight 0 and never becomes the minimum.
    """
    values = np.array([f if f is not None and math.isfinite(f) else np.nan for f in fitness], dtype=np.float64)
    finite = ~np.isnan(values)
    if not finite.any():
        return int(rng.integers(len(values)))
    weights = np.where(finite, values - np.nanmin(values), 0.0)
    total = weights.sum()
    if total <= 0:  # every finite fitness equal: uniform over them
        weights = finite.astype(np.float64)
        total = weights.sum()
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
    return min(index, len(values) - 1)


def propose_generation(method: str, generation: int, *, seed: int, sampler: AdmissibleSampler, params: MethodParams,
                       taken: set[Arch], previous: Sequence[tuple[Arch, float | None]] = ()) -> GenerationPlan:
    """The proposals of `generation` for `method`.

    `taken`: every arch proposed in earlier generations (never proposed again). `previous`: (arch, fitness) of the
    previous generation, in order (the roulette wheel's parents for ``evolved``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; methods are {METHODS}")
    rng = generation_rng(seed, generation)
    before = SamplerStats(**sampler.stats.to_dict())
    taken = set(taken)
    proposals: list[Proposal] = []
    extra: dict[str, int | list[int]] = {}

    def fresh(origin: str) -> Proposal:
        arch = sampler.sample(rng, exclude=taken)
        taken.add(arch)
        return Proposal(arch, origin)

    if method == "fast":
        proposals, extra = _fast(sampler, rng, params, taken)
    elif method == "random" or generation == 0 or not previous:
        proposals = [fresh("sampled") for _ in range(params.population)]
    else:
        parents = [arch for arch, _ in previous]
        fitness = [fit for _, fit in previous]
        mutated = redrawn = fallback = 0
        while len(proposals) < params.population:
            if rng.random() < params.explore_prob:
                proposals.append(fresh("explore"))
                continue
            parent = parents[roulette_select(fitness, rng)]
            for _ in range(params.max_redraws):
                child = sampler.space.mutate(parent, rng, prob=params.mutation_prob, max_steps=params.mutation_steps)
                if child in taken or not sampler.admissible(child):
                    redrawn += 1
                    continue
                taken.add(child)
                proposals.append(Proposal(child, "mutated", parent))
                mutated += 1
                break
            else:
                proposals.append(fresh("fallback"))
                fallback += 1
        extra = {"mutated": mutated, "mutation_redraws": redrawn, "fallback_fresh": fallback}

    after = sampler.stats.to_dict()
    stats = {f"sampler_{k}": after[k] - getattr(before, k) for k in after}
    return GenerationPlan(generation, proposals, {**stats, **extra})


def _fast(sampler: AdmissibleSampler, rng: np.random.Generator, params: MethodParams, taken: set[Arch]
          ) -> tuple[list[Proposal], dict[str, int | list[int]]]:
    proposals, skipped = [], []
    for layers in sampler.space.layers.values():
        pool = sample_many(sampler, rng, params.fast_pool, exclude=taken,
                           draw=fast_rule_draw(sampler.space, layers), accept=satisfies_fast_rule)
        if not pool:
            skipped.append(layers)
            continue
        target = sampler.window.target_ms
        best = min(pool, key=lambda a: (abs(sampler.latency(a) - target), a))
        taken.add(best)
        proposals.append(Proposal(best, "rule"))
    if not proposals:
        raise InfeasibleTargetError(
            f"no architecture satisfies the fast rule ({FAST_RULE}) inside the latency window for any layer "
            f"count: {sampler.window.describe()}; {sampler.reachable_description()}. Widen the window or use "
            f"method=evolved or method=random.")
    return proposals, {"skipped_layer_counts": skipped}

