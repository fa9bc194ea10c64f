"""Checkpoints: weights and optimizer tensors as safetensors, everything else as JSON; written atomically.

    <out>/checkpoints/step-0000100/
        model.safetensors       the trainable module (model.* and, for kd, projection.*)
        optimizer.safetensors   AdamW moments and step counts, keyed "<param index>.<name>"
        trainer_state.json      step, config fingerprint + settings, optimizer hyper-parameters, scheduler,
                                RNG state, data position
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ..errors import UserError
from ..io import atomic_write_json, check_output, staged_dir

STATE_NAME = "trainer_state.json"


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed (missing, unreadable, or from another config / space)."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_NAME).is_file())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten `optimizer.state_dict()` into safetensors-ready tensors + JSON-ready param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{name}"] = t.detach().contiguous().cpu()
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(out: Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step` atomically (staging folder, then rename) and delete all but the newest `keep`."""
    target = checkpoint_dir(out) / f"step-{step:07d}"
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    with staged_dir(target, overwrite=True) as stage:
        save_model(module, str(stage / "model.safetensors"))  # handles tied weights (stored once)
        save_file(opt_tensors, str(stage / "optimizer.safetensors"))
        atomic_write_json(stage / STATE_NAME, {**state, "step": step, "out": os.path.abspath(out),
                                               "optimizer": opt_meta})
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out: Path) -> Checkpoint | None:
    found = list_checkpoints(out)
    if not found:
        return None
    path = found[-1]
    try:
        state = json.loads((path / STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable {STATE_NAME}: {err}") from None
    return Checkpoint(path=path, step=int(state["step"]), state=state)


def _moved_with_run(theirs: Any, ours: Any, old_root: str | None, new_root: Path) -> bool:
    """The same path(s) relative to the run's out folder: it was moved or copied together with these files (a
    pipeline run folder with its tokenizer cache), so the run reads its own copies."""
    if old_root is None:
        return False
    if isinstance(theirs, list) and isinstance(ours, list):
        return len(theirs) == len(ours) and all(_moved_with_run(a, b, old_root, new_root) for a, b in zip(theirs, ours))
    if not (isinstance(theirs, str) and isinstance(ours, str) and os.path.isabs(theirs) and os.path.isabs(ours)):
        return False
    return os.path.relpath(theirs, old_root) == os.path.relpath(ours, os.path.abspath(new_root))


def check_compatible(checkpoint: Checkpoint, fingerprint: str, settings: dict[str, Any], workers: int) -> None:
    """Refuse a checkpoint written under other settings (naming the settings that differ) or for another number
    of Algorithm-1 workers. Paths that moved together with the run (a pipeline run folder moved or copied, its
    tokenizer inside it) are the same setting."""
    if checkpoint.state.get("config_fingerprint") != fingerprint:
        theirs = checkpoint.state.get("settings", {})
        differ = sorted(k for k in set(theirs) | set(settings)
                        if json.dumps(theirs.get(k), default=str) != json.dumps(settings.get(k), default=str))
        out = checkpoint.path.parent.parent
        old_root = checkpoint.state.get("out") or _recorded_root(out)
        differ = [k for k in differ if not _moved_with_run(theirs.get(k), settings.get(k), old_root, out)]
        if differ or not theirs:
            details = "; ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {settings.get(k)!r}" for k in differ[:6])
            raise CheckpointError(f"checkpoint {checkpoint.path} was written with other settings "
                                  f"({details or 'unknown'}); resume with the original config, or start a new out "
                                  "folder")
    theirs = checkpoint.state.get("workers", workers)
    if theirs != workers:
        raise CheckpointError(f"checkpoint {checkpoint.path} was trained with {theirs} Algorithm-1 workers, this run "
                              f"has {workers}; set workers={theirs} (any number of processes that divides it)")


def _recorded_root(out: Path) -> str | None:
    """The `out` the run recorded in its run config when it started (where the folder was then), or None."""
    from .validation import RUN_CONFIG_NAME

    try:
        recorded = json.loads((out / RUN_CONFIG_NAME).read_text()).get("out")
    except (OSError, ValueError, AttributeError):
        return None
    return os.path.abspath(recorded) if isinstance(recorded, str) and recorded else None


@dataclass(frozen=True)
class ResumePoint:
    """What `resume` / `overwrite` mean for an output folder, decided before any long work."""

    checkpoint: Checkpoint | None  # the checkpoint to continue from (None: start at step 0)
    clear_out: bool  # empty the folder before writing: overwrite, or our own run that died before its first checkpoint


def resume_point(out: Path, *, resume: bool, overwrite: bool, run_marker: str,
                 inputs: Iterable[tuple[str, Any]] = ()) -> ResumePoint:
    """Check `out` against the flags, before any long work. `run_marker`: the file a run writes first, which tells
    our own folder (that may be started again) from a stranger's. `inputs`: (setting, path) pairs the run reads;
    an `out` that is, contains or sits inside one of them is refused (overwrite=true would destroy it), and so is an
    `out` that cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} exists and is not a folder")
    check_output(out, [(name, path) for name, paths in inputs
                       for path in (paths if isinstance(paths, (list, tuple)) else [paths])])
    non_empty = out.is_dir() and any(out.iterdir())
    checkpoint = latest_checkpoint(out) if resume else None
    if non_empty and not resume and not overwrite:
        raise UserError(f"output folder {out} is not empty; pass resume=true to continue its run, "
                        "overwrite=true to replace it, or choose a new folder")
    died_early = resume and non_empty and checkpoint is None
    if died_early and not (out / run_marker).is_file():
        raise UserError(f"resume=true: {out} holds no checkpoint (checkpoints/step-*) to resume from")
    return ResumePoint(checkpoint, clear_out=(overwrite and not resume) or died_early)


def load_checkpoint(checkpoint: Checkpoint, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    try:
        opt_tensors = load_file(str(checkpoint.path / "optimizer.safetensors"))
        missing, unexpected = load_model(module, str(checkpoint.path / "model.safetensors"), strict=False)
    except Exception as err:  # truncated files (safetensors' errors) or tensors of another shape (torch's)
        raise CheckpointError(f"checkpoint {checkpoint.path} cannot be loaded into this model: {err}; resume with "
                              "the original config, or start a new out folder") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds weights of another model (missing "
                              f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}); resume with the original "
                              "config, or start a new out folder")
    load_optimizer(optimizer, opt_tensors, checkpoint.state["optimizer"])
