"""`autotinybert space NAME`: print a search space, its max arch and its size."""

from __future__ import annotations

import json

ORDER = 10


def register(subparsers) -> None:
    p = subparsers.add_parser("space", help="print a search space (preset name or YAML file)",
                              description="Print a search space: per-dimension grids, the max arch and the exact size.")
    p.add_argument("name", nargs="?", help="preset name (see --list) or a YAML file")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--json", action="store_true", help="print the space as JSON")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also print N archs drawn with --seed")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..space import SearchSpace, SpaceError

    if args.list or args.name is None:
        for name in SearchSpace.presets():
            space = SearchSpace.preset(name)
            print(f"{name:<10} {space.attention:<6} max {space.max_arch}  size {space.size():,}")
        return 0
    space = SearchSpace.load(args.name)
    if args.sample < 0:
        raise SpaceError("--sample must be >= 0")
    if args.json:
        print(json.dumps({**space.to_dict(), "max_arch": str(space.max_arch), "size": space.size()}, indent=2))
    else:
        print(space.describe())
    rng = np.random.default_rng(args.seed)
    for _ in range(args.sample):
        print(space.sample(rng))
    return 0
