"""Stage bookkeeping for `autotinybert run`: skip what is done, resume what was interrupted, redo what changed.

Every stage writes into ``RUN_DIR/<stage>/``:

* ``config.json`` -- the stage's inputs and its fingerprint, written before the stage starts;
* ``DONE.json``   -- the completion marker: fingerprint, outputs (``outputs.to_dict()``), wall time.

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


def fingerprint(inputs: StageInputs, upstream: list[str]) -> str:
    """The stage's identity: its inputs and the ``fingerprint:completion`` ids of the stages it reads from."""
    payload = json.dumps({"config": inputs.fingerprint_data(), "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
        self.run_dir = Path(run_dir)
        self.ranks = ranks or Ranks()
        if self.ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log if self.ranks.is_main else (lambda line: None)
        self.results: dict[str, StageResult] = {}

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def done(self, name: str) -> dict[str, Any] | None:
        marker = self.stage_dir(name) / DONE_FILE
        return json.loads(marker.read_text()) if marker.is_file() else None

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
        fp = fingerprint(inputs, self.upstream_ids(name, upstream))
        stage_dir = self.stage_dir(name)
        decision = self.ranks.share(self._decide(name, fp, inputs, outputs_type, upstream)
                                    if self.ranks.is_main else None)
        if decision["skip"]:
            result = StageResult(name, fp, outputs_type.from_dict(decision["outputs"]), skipped=True,
                                 resumed=False, wall_s=0.0, completion=decision["completion"])
            self.results[name] = result
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
        completion = f"{fp}-{time.time_ns()}"  # unique per completed run: what later stages' fingerprints chain
        if self.ranks.is_main:
            atomic_write_json(stage_dir / DONE_FILE, {"stage": name, "fingerprint": fp, "outputs": outputs,
                                                      "wall_s": round(wall, 2), "finished": time.time(),
                                                      "completion": completion})
        shared = self.ranks.share({"outputs": outputs, "completion": completion} if self.ranks.is_main else None)
        if "failed" in shared:
            raise RuntimeError(f"stage {name!r} failed on rank 0 ({shared['failed']}); see rank 0's output")
        result = StageResult(name, fp, outputs_type.from_dict(shared["outputs"]), skipped=False, resumed=resume,
                             wall_s=wall, completion=shared["completion"])
        self.results[name] = result
        return result

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
                                         "config": inputs.to_dict()})
        return {"skip": False, "resume": resume}


def _readable(outputs: Any, outputs_type: type[Config]) -> bool:
    """Stored outputs still of the stage's outputs type (a marker written by an older version is redone)."""
    try:
        outputs_type.from_dict(outputs)
    except ConfigError:
        return False
    return True
