"""Stage bookkeeping for `autotinybert run`: skip what is done, resume what was interrupted, redo what changed.

Every stage writes into ``RUN_DIR/<stage>/``:

* ``config.json`` -- the stage's inputs and its fingerprint, written before the stage starts;
* ``DONE.json``   -- the completion marker: fingerprint, outputs (``outputs.to_dict()``), wall time.

Run folders are movable: paths inside the run folder are stored relative to it (``DONE.json`` lists which
values are such paths under ``relative``) and read back against wherever the folder is now, and fingerprints see
those paths relative to the run folder too. A moved run skips and resumes as before; a copied run reads its own
files, never the original's. Completion ids count the stage's completions in this folder (``completions.json``),
so two runs of one config write the same ids, while a stage that ran again still invalidates what read it.

A stage is a function ``fn(inputs, stage_dir, resume) -> outputs`` of one frozen `StageInputs` value holding
everything it reads. Its fingerprint hashes that value and the fingerprints *and completion ids* of the stages it
reads from, so changing anything a stage reads re-runs that stage and everything downstream of it, and nothing
upstream; and a stage that ran again (its folder deleted by hand, say) invalidates everything that read its old
outputs.

Under ``torchrun`` (see `ranks`), rank 0 takes every decision and writes every marker; a stage declared
``distributed`` runs on all ranks, any other on rank 0 only, and the other ranks receive its outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from ..config import Config, ConfigError
from ..errors import UserError
from ..io import atomic_write_json
from .ranks import Ranks

CONFIG_FILE = "config.json"
DONE_FILE = "DONE.json"
# the stages this invocation has confirmed so far (run, resumed or found done), rewritten after each: a stage record
# on disk may belong to a run this invocation is about to redo, this file says which ones it will not
PROGRESS_FILE = "progress.json"
COMPLETIONS_FILE = "completions.json"
RUN_TOKEN = "$RUN"  # the run folder, in fingerprints
LOCK_FILE = ".autotinybert-run.lock"


class RunFolderBusyError(UserError):
    """Another pipeline process holds the run folder."""


class RunLock:
    """An exclusive lock on a run folder for the life of one pipeline run: two runs writing the same stage
    folders would corrupt each other's checkpoints and markers. `flock` dies with its process, so a killed run
    never leaves a stale lock behind (where `fcntl` is missing, e.g. on Windows, no lock is taken)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderBusyError(
                f"another autotinybert run (pid {holder}) is using {self.path.parent}; wait for it to finish or "
                "give this run another `out` folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


class StageInputs(Config):
    """Everything one stage reads. The fingerprint covers every field but the `run_only` ones (which change
    nothing the stage computes: progress bars)."""

    run_only: ClassVar[frozenset[str]] = frozenset({"progress"})

    def fingerprint_data(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in self.run_only}


Outputs = TypeVar("Outputs", bound=Config)


def fingerprint(inputs: StageInputs, upstream: list[str], run_dir: str | Path | None = None) -> str:
    """The stage's identity: its inputs and the ``fingerprint:completion`` ids of the stages it reads from.
    Paths inside `run_dir` enter relative to it, so a moved run folder keeps its fingerprints."""
    payload = json.dumps({"config": inputs.fingerprint_data(), "upstream": upstream}, sort_keys=True, default=str)
    if run_dir is not None:
        payload = _run_relative_text(payload, run_dir)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _run_roots(run_dir: str | Path) -> list[str]:
    """The spellings of the run folder's path that values may hold, longest first."""
    roots = {os.path.abspath(run_dir), os.path.realpath(run_dir)}
    if not os.path.isabs(run_dir):
        roots.add(os.path.normpath(run_dir))  # relative to the current folder, as a command line gave it
    return sorted((r for r in roots if r != os.sep), key=len, reverse=True)


def _run_relative_text(payload: str, run_dir: str | Path) -> str:
    """`payload` (JSON text) with every string that starts with the run folder's path rewritten to start with
    $RUN (whole path components only: ``/runs/a`` does not match ``/runs/ab``)."""
    for root in _run_roots(run_dir):
        payload = re.sub('"' + re.escape(json.dumps(root)[1:-1]) + '(?=[/"])', lambda _: '"' + RUN_TOKEN, payload)
    return payload


def relative_paths(data: Any, run_dir: str | Path) -> tuple[Any, list[str]]:
    """`data` (JSON-able) with every absolute path inside `run_dir` made relative to it, and the JSON pointers
    (``/models/0/extracted_dir``) of the values changed."""
    roots = _run_roots(run_dir)
    pointers: list[str] = []

    def walk(value: Any, pointer: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{pointer}/{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{pointer}/{i}") for i, v in enumerate(value)]
        if isinstance(value, str) and os.path.isabs(value):
            for root in roots:
                if value == root or value.startswith(root + os.sep):
                    pointers.append(pointer)
                    return os.path.relpath(value, root)
        return value

    return walk(data, ""), pointers


def absolute_paths(data: Any, pointers: list[str], run_dir: str | Path) -> Any:
    """The inverse of `relative_paths`: the values at `pointers` joined to the run folder where it is now."""
    root = os.path.abspath(run_dir)

    def walk(value: Any, pointer: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{pointer}/{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{pointer}/{i}") for i, v in enumerate(value)]
        if pointer in wanted and isinstance(value, str):
            return os.path.normpath(os.path.join(root, value))
        return value

    wanted = set(pointers)
    return walk(data, "")


def read_done(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """A stage's DONE.json with its outputs' paths resolved against the run folder where it is now (None: the
    stage has not completed)."""
    marker = Path(run_dir) / stage / DONE_FILE
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{marker} is unreadable ({err}); delete that stage folder to run the stage again") from None
    if not isinstance(done, dict):
        raise UserError(f"{marker} is not a stage record; delete that stage folder to run the stage again")
    done["outputs"] = absolute_paths(done.get("outputs"), done.get("relative", []), run_dir)
    return done


@dataclass
class StageResult:
    name: str
    fingerprint: str
    outputs: Config
    skipped: bool  # True when a completed stage with the same fingerprint was reused
    resumed: bool  # True when an interrupted run of the same config was continued
    wall_s: float
    completion: str = ""  # id of the run that completed it (DONE.json); "" for markers written before ids existed


class StageRunner:
    """Runs stages in order inside one run folder. `log` receives one line per decision."""

    def __init__(self, run_dir: str | Path, log: Callable[[str], None] = print, ranks: Ranks | None = None):
        self.run_dir = Path(os.path.abspath(run_dir))  # stage folders and outputs are absolute in memory
        self._spelling = run_dir  # as given (maybe relative): inputs built from the config may spell it so
        self.ranks = ranks or Ranks()
        if self.ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log if self.ranks.is_main else (lambda line: None)
        self.results: dict[str, StageResult] = {}
        self._write_progress()

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def done(self, name: str) -> dict[str, Any] | None:
        return read_done(self.run_dir, name)

    def _count_completion(self, name: str) -> int:
        """How many times stage `name` has completed in this run folder, this one included."""
        file = self.run_dir / COMPLETIONS_FILE
        try:
            counts = json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, ValueError):
            counts = {}
        counts = counts if isinstance(counts, dict) else {}
        counts[name] = int(counts.get(name, 0)) + 1
        atomic_write_json(file, counts)
        return counts[name]

    def upstream_ids(self, name: str, upstream: tuple[str, ...]) -> list[str]:
        missing = [u for u in upstream if u not in self.results]
        if missing:
            raise RuntimeError(f"stage {name!r} needs stages {missing} to run first")
        return [f"{self.results[u].fingerprint}:{self.results[u].completion}" for u in upstream]

    def run(self, name: str, inputs: StageInputs, fn: Callable[[Any, Path, bool], Outputs],
            outputs_type: type[Outputs], upstream: tuple[str, ...] = (), distributed: bool = False) -> StageResult:
        """Run `fn(inputs, stage_dir, resume)` (it returns an `outputs_type`) unless a completed run with the same
        fingerprint exists.

        `upstream` names earlier stages whose outputs this one reads; their fingerprints enter this one's.
        `distributed`: under torchrun every rank calls `fn` (it uses the process group itself); otherwise only
        rank 0 does and the others get its outputs.
        """
        fp = fingerprint(inputs, self.upstream_ids(name, upstream), self._spelling)
        stage_dir = self.stage_dir(name)
        decision = self.ranks.share(self._decide(name, fp, inputs, outputs_type, upstream)
                                    if self.ranks.is_main else None)
        if decision["skip"]:
            result = StageResult(name, fp, outputs_type.from_dict(decision["outputs"]), skipped=True,
                                 resumed=False, wall_s=0.0, completion=decision["completion"])
            self.results[name] = result
            self._write_progress()
            return result
        resume = decision["resume"]
        start = time.time()
        outputs: dict[str, Any] | None = None
        if distributed or self.ranks.is_main:
            try:
                outputs = fn(inputs, stage_dir, resume).to_dict()
            except BaseException as err:
                if not distributed and self.ranks.distributed:  # release the waiting ranks, then fail
                    self.ranks.share({"failed": f"{type(err).__name__}: {err}"})
                raise
        wall = time.time() - start
        completion = ""
        if self.ranks.is_main:
            # unique per completion in this folder: what later stages' fingerprints chain
            completion = f"{fp}-{self._count_completion(name)}"
            stored, relative = relative_paths(outputs, self.run_dir)
            atomic_write_json(stage_dir / DONE_FILE, {"stage": name, "fingerprint": fp, "outputs": stored,
                                                      "relative": relative, "wall_s": round(wall, 2),
                                                      "finished": time.time(), "completion": completion})
        shared = self.ranks.share({"outputs": outputs, "completion": completion} if self.ranks.is_main else None)
        if "failed" in shared:
            raise RuntimeError(f"stage {name!r} failed on rank 0 ({shared['failed']}); see rank 0's output")
        result = StageResult(name, fp, outputs_type.from_dict(shared["outputs"]), skipped=False, resumed=resume,
                             wall_s=wall, completion=shared["completion"])
        self.results[name] = result
        self._write_progress()
        return result

    def _write_progress(self) -> None:
        if self.ranks.is_main:
            atomic_write_json(self.run_dir / PROGRESS_FILE,
                              {"stages": {name: r.completion for name, r in self.results.items()}})

    def _decide(self, name: str, fp: str, inputs: StageInputs, outputs_type: type[Config],
                upstream: tuple[str, ...]) -> dict[str, Any]:
        """Rank 0: skip (with the stored outputs), resume an interrupted run of the same fingerprint, or start
        afresh (clearing the stage folder); records the start in the stage's config.json."""
        stage_dir = self.stage_dir(name)
        done = self.done(name)
        if done is not None and done.get("fingerprint") == fp and _readable(done.get("outputs"), outputs_type):
            self.log(f"[{name}] done already (fingerprint {fp}); skipping")
            return {"skip": True, "outputs": done["outputs"], "completion": done.get("completion", "")}
        resume = False
        started_file = stage_dir / CONFIG_FILE
        if stage_dir.exists():
            previous = json.loads(started_file.read_text()).get("fingerprint") if started_file.is_file() else None
            if done is None and previous == fp:
                resume = True
                self.log(f"[{name}] resuming an interrupted run (fingerprint {fp})")
            else:
                why = "its config or an upstream stage changed" if previous else "it holds no stage record"
                self.log(f"[{name}] re-running from scratch: {why}")
                shutil.rmtree(stage_dir)
        if not resume:
            self.log(f"[{name}] running (fingerprint {fp})")
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(started_file, {"stage": name, "fingerprint": fp, "upstream": list(upstream),
                                         "config": relative_paths(inputs.to_dict(), self.run_dir)[0]})
        return {"skip": False, "resume": resume}


def _readable(outputs: Any, outputs_type: type[Config]) -> bool:
    """Stored outputs still of the stage's outputs type (a marker written by an older version is redone)."""
    try:
        outputs_type.from_dict(outputs)
    except ConfigError:
        return False
    return True
