"""`autotinybert space [NAME]`: print a search space, its max arch and its size."""

from __future__ import annotations

import json

from typing import Literal

from ..config import Config, Field, path_field, positional_field
from . import Command


class SpaceCommandConfig(Config):
    """Print a search space: per-dimension grids, the max arch and the exact size (no NAME: list the presets)."""

    name: str | None = positional_field(None)
    """Preset name (mlm, kd, cpu-mlm, cpu-kd), a YAML file, or from-init / from-init-heads / from-init-dims (with
    init_from); none lists the presets."""
    init_from: str | None = path_field(None, names=True)
    """from-init: the pre-trained BERT (folder or hub name) whose arch is the space's max arch."""
    objective: Literal["kd", "mlm"] = "kd"
    """from-init: the objective the space is for (kd keeps the checkpoint's heads: the dims cut)."""
    as_json: bool = False
    """Print the space as JSON."""
    sample: int = Field(0, ge=0)
    """Also print this many archs drawn with `seed`."""
    seed: int = Field(0, ge=0)
    """Seed of the sampled archs."""


def run(config: SpaceCommandConfig) -> int:
    import numpy as np

    from ..space import SearchSpace, from_init_cut, is_from_init, resolve_space

    if config.name is None:
        for name in SearchSpace.presets():
            space = SearchSpace.preset(name)
            print(f"{name:<10} {space.attention:<6} max {space.max_arch}  size {space.size():,}")
        return 0
    space = resolve_space(config.name, config.init_from, config.objective)
    if is_from_init(config.name) and not config.as_json:
        from ..pretrained import inspect_checkpoint

        arch = inspect_checkpoint(str(config.init_from)).arch
        reason = f"chosen: {from_init_cut(arch, config.objective)[1]}" if config.name == "from-init" else "as named"
        print(f"derived from {config.init_from} (arch {arch}); cut '{space.attention}' {reason}")
    if config.as_json:
        print(json.dumps({**space.to_dict(), "max_arch": str(space.max_arch), "size": space.size()}, indent=2))
    else:
        print(space.describe())
    rng = np.random.default_rng(config.seed)
    for _ in range(config.sample):
        print(space.sample(rng))
    return 0


COMMANDS = [Command("space", "print a search space (preset name or YAML file)", f"{__name__}:SpaceCommandConfig",
                    run, examples=("autotinybert space", "autotinybert space cpu-kd sample=3 seed=1",
                                   "autotinybert space from-init init_from=path/to/all-MiniLM-L6-v2"))]
