"""The search's record files: ``candidates.jsonl`` (one line per evaluated arch, appended) and its reader.

Lines are written in candidate order (generation, then slot), each flushed and fsynced, so a killed run leaves
a clean prefix of the uninterrupted run's file (at worst one torn last line, which the reader drops).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_write_text

CANDIDATES_FILE = "candidates.jsonl"
TIMING_FIELDS = ("wall_s",)  # differ between runs of the same search


class RecordError(UserError):
    """A candidates file that cannot be read or does not belong to this search."""


@dataclass(frozen=True)
class CandidateRecord:
    """One evaluated candidate."""

    index: int  # position in the whole search: generation-major, then slot
    generation: int
    slot: int
    arch: str
    latency_ms: float  # predicted
    speedup: float  # predicted, vs the predictor's BERT-base reference
    scores: dict[str, float]
    fitness: float | None  # None when the evaluator returned a non-finite value
    origin: str  # "sampled" | "explore" | "mutated" | "fallback" | "rule"
    parent: str | None
    wall_s: float  # evaluation time
    worker: str = ""  # "main", "pid:<n>" or "rank:<n>"

    @property
    def arch_value(self) -> Arch:
        return Arch.parse(self.arch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparable(self) -> dict[str, Any]:
        """The record without timing and worker fields: equal across reruns of the same search."""
        data = self.to_dict()
        for name in (*TIMING_FIELDS, "worker"):
            data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateRecord:
        names = set(cls.__dataclass_fields__)
        missing = sorted(n for n in names - set(data) if n != "worker")
        if missing:
            raise RecordError(f"candidate record lacks field(s) {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})


def finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def sort_key(record: CandidateRecord) -> tuple:
    """Best first: highest fitness, failed evaluations last, ties by search order."""
    return (record.fitness is None, -(record.fitness or 0.0), record.index)


class CandidateLog:
    """Append-only writer and tolerant reader of ``candidates.jsonl``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self, repair: bool = False) -> list[CandidateRecord]:
        """All complete records. A torn last line (a kill mid-write) is dropped; with `repair` also cut from the file."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        records, kept = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = CandidateRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, RecordError, TypeError) as err:
                if number == len(lines):
                    break  # torn final line: the run was killed while writing it
                raise RecordError(f"{self.path}:{number} is not a candidate record ({err}); the file is damaged. "
                                  f"Move it away to start the search afresh.") from None
            records.append(record)
            kept.append(line if line.endswith("\n") else line + "\n")
        clean = "".join(kept)
        if repair and clean != text:
            atomic_write_text(self.path, clean)
        return records

    def append(self, record: CandidateRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_dict(), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def read_records(path: str | Path) -> list[CandidateRecord]:
    """The records of a ``candidates.jsonl`` (a torn last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"candidates file {path} does not exist")
    return CandidateLog(path).read()
