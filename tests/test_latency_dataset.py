"""The latency dataset: seeded sampling over every depth, resume after a kill, settings checks."""

import json

import pytest

from autotinybert import Arch, SearchSpace
from autotinybert.errors import UserError
from autotinybert.latency import measure_dataset, read_dataset, sample_archs

# a tiny space: the reference (BERT-base) still runs once per interval, so keep the interval long
TINY_SPACE = {"name": "tiny", "attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16],
              "ffn": [16, 64, 16], "heads": [1, 2], "head_size": 8}
FAST = dict(warmup=0, repeats=1, reference_every=100, progress=False, protocol="interleaved")  # resume mechanics
# (the anchored protocol's file is tested on stub models in test_latency_protocol.py)


def test_sampling_is_seeded_distinct_prefix_stable_and_covers_every_depth():
    space = SearchSpace.preset("mlm")
    archs = sample_archs(space, 40, seed=7)
    assert archs == sample_archs(space, 40, seed=7)
    assert archs[:10] == sample_archs(space, 10, seed=7)
    assert archs != sample_archs(space, 40, seed=8)
    assert len(set(archs)) == 40 and all(space.contains(a) for a in archs)
    assert sorted({a.layers for a in archs}) == list(range(1, 9))
    with pytest.raises(UserError, match="only 32"):
        sample_archs(SearchSpace.from_dict(TINY_SPACE), 33)


def test_measure_writes_records_with_device_and_resumes(tmp_path):
    out = tmp_path / "lat.jsonl"
    measured = []
    first = measure_dataset(TINY_SPACE, 3, out, on_record=measured.append, **FAST)
    assert (first.measured, first.skipped, first.references) == (3, 0, 2)  # reference before and after
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["reference", "arch", "arch", "arch", "reference"]
    for row in rows:
        assert row["device"]["threads"] == 1 and row["device"]["seq_len"] == 128 and row["device"]["cpu"]
        assert row["median_ms"] > 0 and row["repeats"] == 1 and "iqr_ms" in row
    assert rows[1]["reference_ms"] == rows[0]["median_ms"]

    # grow to 5: the 3 already in the file are skipped, only the 2 new ones are measured
    measured.clear()
    second = measure_dataset(TINY_SPACE, 5, out, on_record=measured.append, **FAST)
    assert (second.measured, second.skipped) == (2, 3)
    assert [r.arch for r in measured] == sample_archs(SearchSpace.from_dict(TINY_SPACE), 5)[3:]

    # a kill in the middle of a write leaves a torn line: reading ignores it, resuming cuts it off
    with open(out, "a") as handle:
        handle.write('{"kind": "arch", "arch": "1-16-')
    data = read_dataset(out)
    assert len(data.records) == 5 and len(data.references) == 4
    third = measure_dataset(TINY_SPACE, 6, out, **FAST)
    assert (third.measured, third.skipped) == (1, 5)
    lines = out.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line parses again
    final = read_dataset(out)
    assert len({r.arch for r in final.records}) == 6 and final.reference_ms > 0

    # nothing left to do: nothing measured, nothing written
    size = out.stat().st_size
    assert measure_dataset(TINY_SPACE, 6, out, **FAST).measured == 0 and out.stat().st_size == size


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "lat.jsonl"
    measure_dataset(TINY_SPACE, 1, out, **FAST)
    before = out.read_bytes()
    with pytest.raises(UserError, match="other settings"):
        measure_dataset(TINY_SPACE, 2, out, seq_len=64, **FAST)
    assert out.read_bytes() == before


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_dataset(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        read_dataset(bad)
    with pytest.raises(UserError, match="positive"):
        measure_dataset(TINY_SPACE, 0, tmp_path / "x.jsonl", **FAST)
    with pytest.raises(UserError, match="folder"):
        measure_dataset(TINY_SPACE, 1, tmp_path, **FAST)
    assert not (tmp_path / "x.jsonl").exists()
