"""`autotinybert space [NAME]`: print a search space, its max arch and its size."""

from __future__ import annotations

import json

from ..config import Config, Field, positional_field
from . import Command


class SpaceCommandConfig(Config):
    """Print a search space: per-dimension grids, the max arch and the exact size (no NAME: list the presets)."""

    name: str | None = positional_field(None)
    """Preset name (mlm, kd, cpu-mlm, cpu-kd) or a YAML file; none lists the presets."""
    as_json: bool = False
    """Print the space as JSON."""
    sample: int = Field(0, ge=0)
    """Also print this many archs drawn with `seed`."""
    seed: int = Field(0, ge=0)
    """Seed of the sampled archs."""


def run(config: SpaceCommandConfig) -> int:
    import numpy as np

    from ..space import SearchSpace

    if config.name is None:
        for name in SearchSpace.presets():
            space = SearchSpace.preset(name)
            print(f"{name:<10} {space.attention:<6} max {space.max_arch}  size {space.size():,}")
        return 0
    space = SearchSpace.load(config.name)
    if config.as_json:
        print(json.dumps({**space.to_dict(), "max_arch": str(space.max_arch), "size": space.size()}, indent=2))
    else:
        print(space.describe())
    rng = np.random.default_rng(config.seed)
    for _ in range(config.sample):
        print(space.sample(rng))
    return 0


COMMANDS = [Command("space", "print a search space (preset name or YAML file)", f"{__name__}:SpaceCommandConfig",
                    run, examples=("autotinybert space", "autotinybert space cpu-kd sample=3 seed=1"))]
