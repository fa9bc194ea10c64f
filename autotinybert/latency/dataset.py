"""The latency dataset: sampled archs measured on this machine, one JSON line each, resumable.

Each line is a `LatencyRecord` plus ``kind`` ("arch" or "reference"), ``reference_ms`` (the BERT-base latency
measured most recently, for drift tracking), ``index`` (position in the sampled list), ``time`` and the full
``device`` record. Lines are appended, flushed and fsynced one at a time, so a kill loses at most the arch in
flight; a half-written last line is cut off on the next run. Rerunning with the same file skips every arch
already in it (the sampled list is deterministic in the seed), and refuses a file measured with other settings.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arch import BERT_BASE, Arch
from ..errors import UserError
from ..io import check_writable
from ..space import SearchSpace
from .device import SETTING_KEYS, check_settings, compare_records, device_record
from .measure import (DEFAULT_STATISTIC, Ladder, LatencyRecord, PairBlock, Timer, _check_counts, anchored_record,
                      chain_ratios, check_protocol, clock_timer, link_budget_ms, make_runner, summarize,
                      time_interleaved, torch_threads)


def sample_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """`n` distinct archs from `space`, the layer count cycling through every value so each depth is covered.

    Deterministic in (space, n's prefix, seed): the first k of ``sample_archs(space, n)`` equal
    ``sample_archs(space, k)``, so growing a dataset keeps what is measured.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"n must be a positive integer, got {n!r}")
    if n > space.size():
        raise UserError(f"search space '{space.name}' has only {space.size():,} archs; ask for n <= that")
    rng = np.random.default_rng(seed)
    depths = list(space.layers.values())
    seen: set[Arch] = set()
    out: list[Arch] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:  # bounded: a tiny space with n near its size
            raise UserError(f"could not draw {n} distinct archs from '{space.name}' in {attempts} tries; ask for fewer")
        arch = space.sample(rng, layers=depths[len(out) % len(depths)])
        if arch not in seen:
            seen.add(arch)
            out.append(arch)
    return out


@dataclass
class LatencyDataset:
    """What a JSONL file holds: arch records, reference (BERT-base) records and the device record."""

    records: list[LatencyRecord] = field(default_factory=list)
    references: list[LatencyRecord] = field(default_factory=list)
    device: dict[str, Any] | None = None
    reference_at: list[float] = field(default_factory=list)  # per arch record: the reference ms measured nearest
    spaces: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # name -> definition (None: not recorded)
    calibration: list[LatencyRecord] = field(default_factory=list)  # anchored protocol: rung-vs-rung blocks
    statistic: str = DEFAULT_STATISTIC  # the anchored protocol's pair statistic (`pair_ratio`)

    def chain(self) -> dict[Arch, float]:
        """Each anchor's latency / BERT-base's, from every calibration block in the file(s)."""
        links: dict[tuple[Arch, Arch], tuple[list[float], list[float]]] = {}
        for row in self.calibration:
            pooled = links.setdefault((row.arch, Arch.parse(row.anchor)), ([], []))
            pooled[0].extend(row.samples_ms)
            pooled[1].extend(row.anchor_samples_ms)
        return chain_ratios(links, self.statistic)

    def renormalise(self) -> None:
        """Recompute every anchored record's ratio to BERT-base from all the calibration blocks now known, and its
        median_ms as ratio x `reference_ms` (so records from several files, resumed runs or campaigns share one
        scale: speedups are what transfers, raw milliseconds drift with the machine)."""
        anchored = [r for r in self.records if r.anchor is not None]
        if not anchored:
            return
        chain, reference_ms = self.chain(), self.reference_ms
        common = lambda r: r.settings  # noqa: E731
        for i, r in enumerate(self.records):
            if r.anchor is None:
                continue
            block = PairBlock(r.arch, Arch.parse(r.anchor), r.samples_ms, r.anchor_samples_ms)
            self.records[i] = anchored_record(block, chain, reference_ms, common(r), self.statistic)

    @property
    def reference_ms(self) -> float:
        """Median over every BERT-base measurement in the file."""
        if not self.references:
            raise UserError("the latency file holds no reference (BERT-base) measurement; "
                            "measure with autotinybert latency measure, which times it at intervals")
        return float(np.median([r.median_ms for r in self.references]))

    def extend(self, other: LatencyDataset) -> None:
        if self.device is not None and other.device is not None:
            compare_records(self.device, other.device, what="first latency file")
        self.device = self.device or other.device
        self.spaces = {**other.spaces, **self.spaces}
        self.records += other.records
        self.references += other.references
        self.reference_at += other.reference_at
        self.calibration += other.calibration
        self.renormalise()


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parsed lines and the byte length of the complete part (a torn last line is not counted)."""
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    rows = []
    for number, line in enumerate(data[:good].splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:  # not JSON, or not UTF-8 (a binary file)
            raise UserError(f"{path}:{number} is not valid JSON ({err}); it is not a latency file written by "
                            "autotinybert latency measure") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number} is not a latency record (a JSON object); it is not a latency file "
                            "written by autotinybert latency measure")
        rows.append(row)
    return rows, good


def read_dataset(path: str | Path, statistic: str | None = None) -> LatencyDataset:
    """Load a latency JSONL file (a torn last line from a kill is ignored). Anchored records are renormalised with
    `statistic` over their per-round ratios (default: the one the file was measured with)."""
    if statistic is not None:
        check_protocol("anchored", 0.0, 1, 1, statistic)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency file {path} is a folder; give the .jsonl file in it" if path.is_dir() else
                        f"latency file {path} does not exist; create it with autotinybert latency measure")
    rows, _ = _read_lines(path)
    if not rows:
        raise UserError(f"latency file {path} holds no measurements; measure with autotinybert latency measure")
    dataset = LatencyDataset()
    pooled: dict[tuple[Arch, str | None], int] = {}  # (arch, anchor) -> its index in dataset.records
    for number, row in enumerate(rows, 1):
        try:
            record = LatencyRecord.from_dict(row)
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: record {number} is not a latency record ({type(err).__name__}: {err}); give "
                            "a file written by autotinybert latency measure") from None
        if dataset.device is None and isinstance(row.get("device"), dict):
            dataset.device = row["device"]
        if row.get("space") is not None and dataset.spaces.get(str(row["space"])) is None:
            dataset.spaces[str(row["space"])] = row.get("space_def") if isinstance(row.get("space_def"), dict) else None
        if row.get("statistic"):
            dataset.statistic = str(row["statistic"])
        if row.get("kind") == "calibration":
            if record.anchor is None or len(record.samples_ms) != len(record.anchor_samples_ms):
                raise UserError(f"{path}: calibration record {number} lacks its anchor samples; give a file written "
                                "by autotinybert latency measure")
            dataset.calibration.append(record)
        elif row.get("kind") == "reference" or record.is_reference:
            dataset.references.append(record)
        elif (same := pooled.get((record.arch, record.anchor))) is not None and record.anchor is not None:
            first = dataset.records[same]  # another pass of an arch: one record with the samples of every pass
            first.samples_ms += record.samples_ms
            first.anchor_samples_ms += record.anchor_samples_ms
        else:
            pooled[(record.arch, record.anchor)] = len(dataset.records)
            dataset.records.append(record)
            dataset.reference_at.append(float(row.get("reference_ms") or "nan"))
    if statistic is not None:
        dataset.statistic = statistic
    dataset.renormalise()
    return dataset


def load_datasets(paths: list[str | Path], statistic: str | None = None) -> LatencyDataset:
    """Several latency files measured with the same settings, merged."""
    merged = LatencyDataset()
    for path in paths:
        data = read_dataset(path, statistic)
        merged.statistic = data.statistic
        merged.extend(data)
    return merged


@dataclass
class MeasureSummary:
    """What `measure_dataset` did."""

    path: str
    requested: int  # (arch, pass) pairs
    skipped: int  # already in the file
    measured: int
    references: int  # BERT-base measurements taken in this run
    reference_ms: float | None  # median over the whole file
    seconds: float


class _JsonlAppender:
    """Appends one line at a time with flush + fsync (a kill loses at most the line being written)."""

    def __init__(self, path: Path, keep_bytes: int | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_bytes is not None and path.exists() and path.stat().st_size != keep_bytes:
            with open(path, "r+b") as handle:  # cut the torn last line of a killed run
                handle.truncate(keep_bytes)
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def measure_dataset(space: SearchSpace | str, n: int, out: str | Path, *, seed: int = 0, backend: str = "torch",
                    device: str = "cpu", threads: int = 1, batch: int = 1, seq_len: int = 128, warmup: int = 2,
                    repeats: int = 7, reference_every: int = 25, clock: str = "wall", progress: bool = True,
                    protocol: str = "anchored", budget_s: float = 0.5, max_repeats: int = 400,
                    statistic: str = DEFAULT_STATISTIC, passes: int = 1, anchors: list[Arch | str] | None = None,
                    timer: Timer | None = None,
                    on_record: Callable[[LatencyRecord], None] | None = None) -> MeasureSummary:
    """Measure `n` archs sampled from `space` (seeded, every depth covered) into the JSONL file `out`.

    ``protocol="anchored"`` (default): each arch is timed beside its nearest anchor model, `repeats` rounds at least
    and more up to `budget_s` seconds of timed runs (`max_repeats` at most); the anchor ladder is calibrated up to
    BERT-base before the first arch, every `reference_every` archs and after the last (``calibration`` rows, and a
    ``reference`` row with BERT-base's raw ms). Reading the file recomputes each arch's ratio to BERT-base from all
    calibrations (see `LatencyDataset.renormalise`). ``passes=P`` (anchored): P passes over the archs, each arch
    built anew in each, timed for `budget_s` / P beside the anchor of its first pass, one line per (arch, pass);
    reading the file pools an arch's passes (its latency then averages the machine's state over the whole
    campaign, not one moment of it). ``protocol="interleaved"``: the old one (each arch `repeats` times back to
    back, BERT-base re-measured every `reference_every` archs, raw medians).

    ``clock="cpu"`` times the thread's CPU time (for a shared machine, see `clock_timer`). Archs already in `out`
    are skipped, so rerunning after a kill resumes; a file measured with other settings or protocol is refused.
    """
    started = time.time()
    space = SearchSpace.load(space)
    check_settings(backend, device, threads, batch, seq_len, clock)
    _check_counts(warmup, repeats)
    check_protocol(protocol, budget_s, max_repeats, repeats, statistic, passes)
    timer = timer or clock_timer(clock)
    if isinstance(reference_every, bool) or not isinstance(reference_every, int) or reference_every < 1:
        raise UserError(f"reference_every must be a positive integer, got {reference_every!r}")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"out={out} is a folder; give a .jsonl file path")
    check_writable(out, folder=False)
    archs = sample_archs(space, n, seed)
    record_device = device_record(backend, device, threads, batch, seq_len, clock)
    file_protocol = protocol  # the statistic is applied when reading (raw samples are kept), so it may differ

    done: set[tuple[Arch, int]] = set()  # (arch, pass)
    first_anchor: dict[Arch, str] = {}  # the anchor of each arch's first pass: its later passes use it too
    keep_bytes = None
    if out.exists():
        rows, keep_bytes = _read_lines(out)
        for row in rows:
            saved = row.get("device") or {}
            mismatch = {k: (saved.get(k), record_device[k]) for k in SETTING_KEYS if saved.get(k) != record_device[k]}
            if mismatch:
                raise UserError(f"{out} was measured with other settings {mismatch} (file vs request); rerun with "
                                "the same settings or choose a new out file")
            saved_protocol = str(row.get("protocol", "interleaved")).split("/")[0]  # "anchored/<statistic>" too
            if saved_protocol != file_protocol:
                raise UserError(f"{out} was measured with protocol {saved_protocol!r}, this run asks for "
                                f"{file_protocol!r}; use the same protocol or choose a new out file")
            if row.get("kind") == "arch":
                arch = Arch.parse(row["arch"])
                done.add((arch, int(row.get("pass", 0))))
                if row.get("anchor"):
                    first_anchor.setdefault(arch, row["anchor"])
        if rows:
            compare_records(rows[0]["device"], record_device, what=f"latency file {out}")
    todo = [(p, i, a) for p in range(passes) for i, a in enumerate(archs) if (a, p) not in done]
    common = (backend, device, threads, batch, seq_len, clock)
    settings = dict(backend=backend, device=device, threads=threads, batch=batch, seq_len=seq_len, seed=seed)

    def row_of(record: LatencyRecord, kind: str, index: int | None, reference_ms: float | None,
               pass_: int = 0) -> dict[str, Any]:
        return {"kind": kind, **record.to_dict(), "index": index, **({"pass": pass_} if passes > 1 else {}),
                "reference_ms": None if reference_ms is None else round(reference_ms, 5),
                "space": space.name, "space_def": space.to_dict(), "seed": seed, "protocol": file_protocol,
                **({"statistic": statistic} if protocol == "anchored" else {}),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "device": record_device}

    references = 0
    writer = _JsonlAppender(out, keep_bytes) if todo else None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(archs) * passes, initial=len(archs) * passes - len(todo), desc=f"latency {space.name}",
                   unit="arch", disable=not progress or not todo)
        with torch_threads(threads):
            if protocol == "anchored" and todo:
                ladder = Ladder(anchors, settings, timer=timer, warmup=warmup, min_rounds=repeats,
                                max_rounds=max_repeats, budget_ms=budget_s * 1e3 / passes, statistic=statistic,
                                link_budget_ms=link_budget_ms(budget_s, passes))
                try:
                    def calibrate() -> float:
                        nonlocal references
                        for block in ladder.calibrate():
                            stats = summarize(block.model_ms)
                            row = LatencyRecord(block.arch, stats.median_ms, stats.iqr_ms, stats.repeats, *common,
                                                samples_ms=list(block.model_ms), anchor=str(block.anchor),
                                                anchor_ratio=block.ratio(statistic),
                                                anchor_samples_ms=list(block.anchor_ms), raw_median_ms=stats.median_ms)
                            writer.write(row_of(row, "calibration", None, None))
                        stats = summarize(ladder.blocks[-1].anchor_ms)  # the top link's anchor is BERT-base
                        ref = LatencyRecord(ladder.rungs[-1], stats.median_ms, stats.iqr_ms, stats.repeats, *common,
                                            is_reference=True, samples_ms=list(ladder.blocks[-1].anchor_ms),
                                            ratio=1.0, raw_median_ms=stats.median_ms)
                        writer.write(row_of(ref, "reference", None, None))
                        references += 1
                        return stats.median_ms

                    count, current = 0, None
                    for pass_, index, arch in todo:
                        count = count + 1 if pass_ == current else 0  # each pass starts with a calibration
                        current = pass_
                        if count % reference_every == 0:
                            reference_ms = calibrate()
                        runner = make_runner(arch, **settings)
                        try:
                            block = ladder.time_arch(arch, runner, anchor=first_anchor.get(arch))
                        finally:
                            runner.close()
                        first_anchor.setdefault(arch, str(block.anchor))
                        # provisional: reading the file renormalises with every calibration and pools the passes
                        record = ladder.record(block, common)
                        writer.write(row_of(record, "arch", index, reference_ms, pass_))
                        if on_record is not None:
                            on_record(record)
                        bar.update(1)
                        bar.set_postfix(ms=f"{record.median_ms:.1f}", rounds=record.repeats)
                    calibrate()  # close the run with a calibration too
                finally:
                    ladder.close()
            elif todo:
                def run_one(arch: Arch) -> LatencyRecord:
                    runner = make_runner(arch, **settings)
                    try:
                        (samples,) = time_interleaved([runner], warmup=warmup, repeats=repeats, timer=timer,
                                                      settle=0)  # one model back to back: already settled
                    finally:
                        runner.close()
                    stats = summarize(samples)
                    return LatencyRecord(arch, stats.median_ms, stats.iqr_ms, stats.repeats, *common, False, samples)

                reference_ms = None
                for count, (_, index, arch) in enumerate(todo):
                    if count % reference_every == 0:
                        ref = run_one(BERT_BASE)
                        ref.is_reference = True
                        reference_ms = ref.median_ms
                        writer.write(row_of(ref, "reference", None, None))
                        references += 1
                    record = run_one(arch)
                    writer.write(row_of(record, "arch", index, reference_ms))
                    if on_record is not None:
                        on_record(record)
                    bar.update(1)
                    bar.set_postfix(ms=f"{record.median_ms:.1f}", ref_ms=f"{reference_ms:.0f}")
                # close the run with a reference too, so drift over the last interval is visible
                ref = run_one(BERT_BASE)
                ref.is_reference = True
                writer.write(row_of(ref, "reference", None, None))
                references += 1
        bar.close()
    finally:
        if writer is not None:
            writer.close()
    final = read_dataset(out) if out.exists() else None
    return MeasureSummary(str(out), len(archs) * passes, len(archs) * passes - len(todo), len(todo), references,
                          final.reference_ms if final is not None and final.references else None,
                          round(time.time() - started, 1))
