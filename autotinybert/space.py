"""`SearchSpace`: the set of architectures a SuperBERT covers and a search may pick from.

Each dimension is a grid ``low, low+step, ..., high``. Two ways to cut attention (paper Figure 3):

* ``heads``: the head size is fixed and ``qkv = head_size * heads`` (the paper's MLM setting);
* ``dims``: the head count is fixed and ``qkv`` varies on its own grid, every head keeping its first
  ``qkv / heads`` dimensions (the paper's KD setting: attention distillation needs the teacher's head count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from .arch import Arch
from .errors import UserError

ATTENTION_MODES = ("heads", "dims")
DIMENSIONS = ("layers", "hidden", "ffn", "heads", "qkv")


class SpaceError(UserError):
    """A malformed search space, or an architecture outside one."""


@dataclass(frozen=True)
class DimRange:
    """The grid ``low, low + step, ..., high`` of one dimension."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpaceError(f"range {name} must be a positive integer, got {value!r}")
        if self.high < self.low:
            raise SpaceError(f"range high ({self.high}) is below low ({self.low})")
        if (self.high - self.low) % self.step:
            raise SpaceError(f"range {self.low}..{self.high} is not a whole number of steps of {self.step}")

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> range:
        return range(self.low, self.high + 1, self.step)

    def __contains__(self, value: int) -> bool:
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    def index(self, value: int) -> int:
        return (value - self.low) // self.step

    def at(self, index: int) -> int:
        """Grid value at ``index``, clipped to the range."""
        return self.low + min(max(index, 0), self.count - 1) * self.step

    def sample(self, rng: np.random.Generator) -> int:
        return self.low + int(rng.integers(self.count)) * self.step

    def to_dict(self) -> dict[str, int]:
        return {"min": self.low, "max": self.high, "step": self.step}

    @classmethod
    def parse(cls, name: str, spec: Any) -> DimRange:
        """From ``{min, max, step}``, ``[min, max]``, ``[min, max, step]`` or a single integer."""
        try:
            if isinstance(spec, int) and not isinstance(spec, bool):
                return cls(spec, spec, 1)
            if isinstance(spec, (list, tuple)) and len(spec) in (2, 3):
                return cls(*spec)
            if isinstance(spec, dict):
                unknown = sorted(set(spec) - {"min", "max", "step"})
                if unknown or "min" not in spec or "max" not in spec:
                    raise SpaceError(f"needs keys min, max and optional step; got {sorted(spec)}")
                return cls(spec["min"], spec["max"], spec.get("step", 1))
        except SpaceError as err:
            raise SpaceError(f"search space dimension '{name}': {err}") from None
        raise SpaceError(
            f"search space dimension '{name}' must be {{min, max, step}}, [min, max(, step)] or an integer; got {spec!r}"
        )


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "pass an explicit numpy.random.Generator (e.g. numpy.random.default_rng(seed)); "
            f"got {type(rng).__name__}. The global RNG is never used."
        )
    return rng


@dataclass(frozen=True)
class SearchSpace:
    """Per-dimension grids plus the attention cut mode. Build one with `preset`, `from_dict` or `load`."""

    name: str
    attention: Literal["heads", "dims"]
    layers: DimRange
    hidden: DimRange
    ffn: DimRange
    heads: DimRange
    qkv: DimRange | None = None  # dims mode only
    head_size: int | None = None  # heads mode only

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise SpaceError(f"search space '{self.name}': attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.attention == "heads":
            if not isinstance(self.head_size, int) or self.head_size <= 0:
                raise SpaceError(f"search space '{self.name}': attention 'heads' needs a positive integer head_size")
            if self.qkv is not None:
                raise SpaceError(f"search space '{self.name}': attention 'heads' derives qkv = head_size * heads; drop 'qkv'")
        else:
            if self.qkv is None:
                raise SpaceError(f"search space '{self.name}': attention 'dims' needs a 'qkv' range")
            if self.head_size is not None:
                raise SpaceError(f"search space '{self.name}': attention 'dims' varies the head size; drop 'head_size'")
            if self.heads.count != 1:
                raise SpaceError(
                    f"search space '{self.name}': attention 'dims' keeps the head count fixed; "
                    f"give heads a single value, not {self.heads.low}..{self.heads.high}"
                )
            h = self.heads.low
            if self.qkv.low % h or self.qkv.step % h:
                raise SpaceError(
                    f"search space '{self.name}': every qkv value must be divisible by heads={h}; "
                    f"make qkv min ({self.qkv.low}) and step ({self.qkv.step}) multiples of {h}"
                )

    # ----- shape of the space -------------------------------------------------------------
    @property
    def qkv_values(self) -> list[int]:
        if self.attention == "heads":
            return [self.head_size * h for h in self.heads.values()]
        return list(self.qkv.values())

    @property
    def max_arch(self) -> Arch:
        return Arch(self.layers.high, self.hidden.high, self.ffn.high, self.heads.high, max(self.qkv_values))

    @property
    def min_arch(self) -> Arch:
        return Arch(self.layers.low, self.hidden.low, self.ffn.low, self.heads.low, min(self.qkv_values))

    def size(self) -> int:
        """Exact number of architectures in the space."""
        attention_choices = self.heads.count if self.attention == "heads" else self.qkv.count
        return self.layers.count * self.hidden.count * self.ffn.count * attention_choices

    def violations(self, arch: Arch) -> list[str]:
        """Every rule of this space that `arch` breaks, as readable sentences (empty when inside)."""
        problems = []
        for name in ("layers", "hidden", "ffn", "heads"):
            rng: DimRange = getattr(self, name)
            value = getattr(arch, name)
            if value not in rng:
                problems.append(f"{name}={value} is not in {rng.low}..{rng.high} step {rng.step}")
        if self.attention == "heads":
            if arch.qkv != self.head_size * arch.heads:
                problems.append(f"qkv={arch.qkv} must equal head_size*heads = {self.head_size}*{arch.heads} in 'heads' mode")
        elif arch.qkv not in self.qkv:
            problems.append(f"qkv={arch.qkv} is not in {self.qkv.low}..{self.qkv.high} step {self.qkv.step}")
        return problems

    def contains(self, arch: Arch) -> bool:
        return not self.violations(arch)

    def __contains__(self, arch: Arch) -> bool:
        return self.contains(arch)

    def check(self, arch: Arch | str) -> Arch:
        """Return `arch` (parsed if a string) or raise `SpaceError` listing every rule it breaks."""
        arch = Arch.parse(arch) if isinstance(arch, str) else arch
        problems = self.violations(arch)
        if problems:
            raise SpaceError(f"arch {arch} is outside search space '{self.name}': " + "; ".join(problems))
        return arch

    # ----- sampling and mutation (explicit generators only) ---------------------------------
    def sample(self, rng: np.random.Generator, layers: int | None = None) -> Arch:
        """Draw uniformly per dimension (optionally with a fixed layer count)."""
        _check_rng(rng)
        if layers is None:
            layers = self.layers.sample(rng)
        elif layers not in self.layers:
            raise SpaceError(f"layers={layers} is not in search space '{self.name}' ({self.layers.low}..{self.layers.high})")
        hidden = self.hidden.sample(rng)
        ffn = self.ffn.sample(rng)
        heads = self.heads.sample(rng)
        qkv = self.head_size * heads if self.attention == "heads" else self.qkv.sample(rng)
        return Arch(layers, hidden, ffn, heads, qkv)

    def neighbours(self, arch: Arch, dim: str, max_steps: int = 1) -> list[Arch]:
        """Archs that differ from `arch` by 1..max_steps grid steps in `dim` and stay in the space."""
        self.check(arch)
        grid = self._mutable_grid(dim)
        index = grid.index(getattr(arch, dim))
        out = []
        for delta in range(-max_steps, max_steps + 1):
            j = index + delta
            if delta == 0 or not 0 <= j < grid.count:
                continue
            out.append(self._with(arch, dim, grid.low + j * grid.step))
        return out

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.5, max_steps: int = 4) -> Arch:
        """Move each mutable dimension with probability `prob`: layers by +-1, others by up to `max_steps` grid steps.

        The result is always on the grid and inside the space (moves are clipped at the edges, so a parent at
        the top of a range, e.g. 12 heads, mutates downwards instead of failing).
        """
        _check_rng(rng)
        self.check(arch)
        for dim in self.mutable_dims:
            if rng.random() >= prob:
                continue
            grid = self._mutable_grid(dim)
            steps = 1 if dim == "layers" else max_steps
            moves = [d for d in range(-steps, steps + 1) if d and 0 <= grid.index(getattr(arch, dim)) + d < grid.count]
            if moves:
                delta = moves[int(rng.integers(len(moves)))]
                arch = self._with(arch, dim, getattr(arch, dim) + delta * grid.step)
        return arch

    @property
    def mutable_dims(self) -> tuple[str, ...]:
        """Dimensions with more than one value (in 'heads' mode qkv follows heads)."""
        dims = ("layers", "hidden", "ffn", "heads") if self.attention == "heads" else ("layers", "hidden", "ffn", "qkv")
        return tuple(d for d in dims if self._mutable_grid(d).count > 1)

    def _mutable_grid(self, dim: str) -> DimRange:
        if dim not in DIMENSIONS:
            raise SpaceError(f"unknown dimension {dim!r}; dimensions are {DIMENSIONS}")
        if dim == "qkv":
            if self.attention == "heads":
                raise SpaceError("in 'heads' mode qkv follows heads; mutate 'heads' instead")
            return self.qkv
        if dim == "heads" and self.attention == "dims":
            return DimRange(self.heads.low, self.heads.low)
        return getattr(self, dim)

    def _with(self, arch: Arch, dim: str, value: int) -> Arch:
        if dim == "heads":
            return arch.replace(heads=value, qkv=self.head_size * value)
        return arch.replace(**{dim: value})

    def iter_layers(self) -> Iterator[int]:
        return iter(self.layers.values())

    # ----- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "attention": self.attention}
        for dim in ("layers", "hidden", "ffn", "heads"):
            data[dim] = getattr(self, dim).to_dict()
        if self.attention == "heads":
            data["head_size"] = self.head_size
        else:
            data["qkv"] = self.qkv.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> SearchSpace:
        if not isinstance(data, dict):
            raise SpaceError(f"a search space must be a mapping, got {type(data).__name__}")
        allowed = {"name", "attention", "layers", "hidden", "ffn", "heads", "qkv", "head_size"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpaceError(f"unknown search space key(s) {unknown}; allowed keys are {sorted(allowed)}")
        missing = [k for k in ("attention", "layers", "hidden", "ffn", "heads") if k not in data]
        if missing:
            raise SpaceError(f"search space is missing key(s) {missing}")
        return cls(
            name=str(data.get("name", name or "custom")),
            attention=data["attention"],
            layers=DimRange.parse("layers", data["layers"]),
            hidden=DimRange.parse("hidden", data["hidden"]),
            ffn=DimRange.parse("ffn", data["ffn"]),
            heads=DimRange.parse("heads", data["heads"]),
            qkv=DimRange.parse("qkv", data["qkv"]) if data.get("qkv") is not None else None,
            head_size=data.get("head_size"),
        )

    @classmethod
    def preset(cls, name: str) -> SearchSpace:
        if name not in PRESETS:
            raise SpaceError(
                f"unknown search space preset {name!r}; presets are {sorted(PRESETS)} "
                "(or pass a YAML file with SearchSpace.load)"
            )
        return cls.from_dict(PRESETS[name], name=name)

    @classmethod
    def presets(cls) -> list[str]:
        return sorted(PRESETS)

    @classmethod
    def load(cls, name_or_path: str | Path | dict | SearchSpace) -> SearchSpace:
        """A preset name, a YAML file path, a dict, or a SearchSpace (returned as is)."""
        if isinstance(name_or_path, SearchSpace):
            return name_or_path
        if isinstance(name_or_path, dict):
            return cls.from_dict(name_or_path)
        text = str(name_or_path)
        if text in PRESETS:
            return cls.preset(text)
        if text in FROM_INIT:
            raise SpaceError(f"space '{text}' is derived from a checkpoint: it needs init_from (in a training "
                             "config), or `autotinybert space {text} init_from=DIR` to print it")
        path = Path(text)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            if not path.is_file():
                raise SpaceError(f"search space file {path} is a folder; give a YAML file" if path.is_dir() else
                                 f"search space file {path} does not exist")
            import yaml

            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise SpaceError(f"search space file {path} is not valid YAML: {err}") from None
            return cls.from_dict(data, name=path.stem)
        return cls.preset(text)  # raises the unknown-preset error

    def describe(self) -> str:
        lines = [f"search space '{self.name}' (attention cut: {self.attention})"]
        for dim in ("layers", "hidden", "ffn", "heads"):
            r: DimRange = getattr(self, dim)
            lines.append(f"  {dim:<7} {r.low}..{r.high} step {r.step}  ({r.count} values)")
        if self.attention == "heads":
            lines.append(f"  qkv     = {self.head_size} x heads  (head size fixed at {self.head_size})")
        else:
            lines.append(f"  qkv     {self.qkv.low}..{self.qkv.high} step {self.qkv.step}  ({self.qkv.count} values)")
        lines.append(f"  max arch {self.max_arch}   min arch {self.min_arch}")
        lines.append(f"  size     {self.size():,} architectures")
        return "\n".join(lines)


# Paper Table B.1 (pre-training = mlm, distillation = kd) and CPU-scale presets of our own.
PRESETS: dict[str, dict[str, Any]] = {
    "mlm": {
        "attention": "heads",
        "layers": [1, 8],
        "hidden": [128, 768, 4],
        "ffn": [128, 3072, 4],
        "heads": [1, 12],
        "head_size": 64,
    },
    "kd": {
        "attention": "dims",
        "layers": [1, 8],
        "hidden": [128, 768, 4],
        "ffn": [128, 3072, 4],
        "heads": 12,
        "qkv": [180, 768, 12],
    },
    # CPU scale, MLM: max arch 4-256-1024-4-256 (BERT-mini size), trains at a few thousand tokens/s on one core.
    "cpu-mlm": {
        "attention": "heads",
        "layers": [1, 4],
        "hidden": [128, 256, 16],
        "ffn": [128, 1024, 32],
        "heads": [1, 4],
        "head_size": 64,
    },
    # CPU scale, distillation from all-MiniLM-L6-v2 (6-384-1536-12-384): 12 heads like the teacher,
    # the teacher's hidden size as the top, 4 layers at most.
    "cpu-kd": {
        "attention": "dims",
        "layers": [1, 4],
        "hidden": [128, 384, 16],
        "ffn": [128, 1536, 32],
        "heads": 12,
        "qkv": [120, 384, 12],
    },
}


def space_as_dict(spec: str | Path | dict) -> dict[str, Any]:
    """A space spec (preset, YAML file or mapping) as a mapping, so that one of its keys can be overridden
    (``supernet.space.layers.max=3`` on a preset)."""
    if is_from_init(spec):
        raise SpaceError(f"space '{spec}' is derived from init_from and cannot be changed key by key; write it out "
                         f"(`autotinybert space {spec} init_from=DIR as_json=true > space.yaml`), edit it, and pass "
                         "the file as space")
    data = SearchSpace.load(spec).to_dict()
    data.pop("name")  # no longer the preset once a key is changed
    return data


# Spaces derived from a pre-trained checkpoint (`init_from`): the max arch is the checkpoint's own.
FROM_INIT = {"from-init": None, "from-init-heads": "heads", "from-init-dims": "dims"}


def is_from_init(spec: Any) -> bool:
    return isinstance(spec, str) and spec in FROM_INIT


def _grid(high: int, low_fraction: float, divisions: int) -> DimRange:
    """``high`` down to about ``high * low_fraction`` in about `divisions` steps (multiples of 8 once >= 8)."""
    step = max(1, high // divisions)
    if step >= 8:
        step -= step % 8
    target = max(1, math.ceil(high * low_fraction))
    return DimRange(high - ((high - target) // step) * step, high, step)


def from_init_cut(arch: Arch, objective: str = "kd") -> tuple[str, str]:
    """(cut, reason) for a space derived from a checkpoint of `arch`.

    kd needs the ``dims`` cut (attention distillation compares every head with the teacher's, so sub-models keep
    the checkpoint's head count). Otherwise the head size decides: up to 64 the ``heads`` cut moves qkv in steps of
    one head (BERT-base: 12 values of 64), which is fine-grained enough and keeps whole pre-trained heads; larger
    heads would make that grid too coarse, so the ``dims`` cut trims every head instead."""
    if objective == "kd":
        return "dims", f"kd keeps the checkpoint's {arch.heads} heads (attention distillation compares them head by head)"
    if arch.head_size <= 64:
        return "heads", f"head size {arch.head_size} <= 64: qkv moves one whole head ({arch.head_size}) at a time"
    return "dims", f"head size {arch.head_size} > 64: a whole head is too coarse a step, so each head's dims are cut"


def space_from_arch(arch: Arch, cut: str, name: str = "from-init") -> SearchSpace:
    """A space whose max arch is `arch`: layers 1..L, hidden from ~H/4 and FFN from ~F/8 in ~24 and ~48 steps
    (16 / 32 for MiniLM's 384 / 1536), and attention by `cut`: ``heads`` 1..h at the checkpoint's head size, or
    ``dims`` with h heads and qkv from ~qkv/4 in steps of one dimension per head."""
    if cut not in ATTENTION_MODES:
        raise SpaceError(f"cut must be one of {ATTENTION_MODES}, got {cut!r}")
    data: dict[str, Any] = {"name": name, "attention": cut, "layers": [1, arch.layers],
                            "hidden": _grid(arch.hidden, 0.25, 24).to_dict(), "ffn": _grid(arch.ffn, 0.125, 48).to_dict()}
    if cut == "heads":
        data.update(heads=[1, arch.heads], head_size=arch.head_size)
    else:
        qkv_low = arch.qkv - ((arch.qkv - max(arch.heads, arch.qkv // 4)) // arch.heads) * arch.heads
        data.update(heads=arch.heads, qkv=[qkv_low, arch.qkv, arch.heads])
    return SearchSpace.from_dict(data)


def resolve_space(spec: str | Path | dict | SearchSpace, init_from: str | None = None,
                  objective: str = "mlm") -> SearchSpace:
    """A space spec as `SearchSpace.load` takes it, plus ``from-init`` (cut by `from_init_cut`), ``from-init-heads``
    and ``from-init-dims``, derived from the checkpoint `init_from` (its config only is read)."""
    if not is_from_init(spec):
        return SearchSpace.load(spec)
    if not init_from:
        raise SpaceError(f"space '{spec}' is derived from a checkpoint: set init_from=DIR_OR_HUB_NAME")
    from .pretrained import inspect_checkpoint

    arch = inspect_checkpoint(str(init_from)).arch
    cut = FROM_INIT[spec] or from_init_cut(arch, objective)[0]
    return space_from_arch(arch, cut, name=str(spec))
