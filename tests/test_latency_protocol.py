"""The anchored latency protocol on stub models: the anchor timed in every round, normalisation through the anchor
chain, adaptive rounds within the budget, the dataset file and its renormalisation, bad inputs. No real timing."""

import json

import numpy as np
import pytest

from autotinybert import BERT_BASE, Arch
from autotinybert.errors import UserError
from autotinybert.latency import (measure_dataset, measure_latency, pair_ratio, read_dataset, ratio_statistic,
                                  time_paired)
from autotinybert.latency import dataset as dataset_module
from autotinybert.latency import measure as measure_module
from autotinybert.latency.measure import ANCHORS, PairBlock, anchored_record, chain_ratios

TINY_SPACE = {"name": "tiny", "attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16],
              "ffn": [16, 64, 16], "heads": [1, 2], "head_size": 8}


def stub_ms(arch: Arch) -> float:
    """A made-up latency: 1 us per (layer x hidden unit); BERT-base = 9.216 ms."""
    return 0.001 * arch.layers * arch.hidden


class StubRunner:
    """Takes `ms` (times `slowdown`, which a test may change between rounds) and logs every run."""

    def __init__(self, name, ms, log=None):
        self.name, self.ms, self.log, self.slowdown = name, ms, log if log is not None else [], 1.0

    def forward(self):
        self.log.append(self.name + "~")  # an untimed run

    def time_once(self, timer):
        self.log.append(self.name)
        return self.ms * self.slowdown

    def close(self):
        pass


@pytest.fixture
def stub_models(monkeypatch):
    """Every model `make_runner` builds is a StubRunner taking `stub_ms(arch)`; returns the shared run log."""
    log = []

    def make(arch, **_):
        return StubRunner(str(arch), stub_ms(Arch.parse(arch)), log)

    monkeypatch.setattr(measure_module, "make_runner", make)
    monkeypatch.setattr(dataset_module, "make_runner", make)
    return log


def test_ratio_statistics_exact():
    values = [1.0, 9.0, 2.0, 3.0, 100.0]
    assert ratio_statistic(values, "lowmean") == pytest.approx((1 + 2 + 3) / 3)  # lower half, median included
    assert ratio_statistic(values[:4], "lowmean") == pytest.approx((1 + 2) / 2)
    assert ratio_statistic(values) == pytest.approx((2 + 3 + 9) / 3)  # 20-80 % trimmed mean
    assert ratio_statistic(values, "median") == 3.0
    assert ratio_statistic(values, "mean") == pytest.approx(23.0)
    assert ratio_statistic(list(range(10)), "trimmed") == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))
    with pytest.raises(UserError, match="statistic"):
        ratio_statistic(values, "mode")
    with pytest.raises(UserError, match="per-round"):
        ratio_statistic(values, "quiet")  # quiet is a statistic of the two sample lists, not of their ratios


def test_quiet_pair_ratio_is_the_ratio_of_lower_half_means():
    model = [1.0, 1.2, 5.0, 1.1]  # one disturbed round
    anchor = [4.0, 9.0, 4.4, 4.2]  # another one
    assert pair_ratio(model, anchor) == pytest.approx(((1.0 + 1.1) / 2) / ((4.0 + 4.2) / 2))
    assert pair_ratio(model, anchor, "median") == pytest.approx(np.median(np.divide(model, anchor)))
    with pytest.raises(UserError, match="same number"):
        pair_ratio(model, anchor[:3])
    with pytest.raises(UserError, match="repeats"):
        ratio_statistic([])


def test_anchor_is_timed_in_every_round_abba_each_after_a_settle_run():
    log = []
    anchor, model = StubRunner("a", 2.0, log), StubRunner("x", 1.0, log)
    a, x = time_paired(anchor, model, min_rounds=4, max_rounds=4, budget_ms=0.0, timer=None)
    assert a == [2.0] * 4 and x == [1.0] * 4
    assert log == ["a~", "a", "x~", "x", "x~", "x", "a~", "a"] * 2
    log.clear()
    time_paired(anchor, model, min_rounds=2, max_rounds=2, budget_ms=0.0, timer=None, settle=0)
    assert log == ["a", "x", "x", "a"]


@pytest.mark.parametrize("min_rounds, max_rounds, budget_ms, rounds", [
    (2, 100, 10.0, 4),   # 3 ms a round: the 4th round reaches 12 ms >= 10
    (2, 100, 12.0, 4),   # exactly on budget: stop
    (6, 100, 10.0, 6),   # the minimum wins over the budget
    (1, 3, 10.0, 3),     # the maximum caps it
    (5, 100, 0.0, 5),    # no budget: exactly the minimum
])
def test_adaptive_rounds_honour_the_budget(min_rounds, max_rounds, budget_ms, rounds):
    log = []
    a, x = time_paired(StubRunner("a", 2.0, log), StubRunner("x", 1.0, log), min_rounds=min_rounds,
                       max_rounds=max_rounds, budget_ms=budget_ms, timer=None)
    assert len(a) == len(x) == rounds
    assert log.count("a") == log.count("x") == rounds and log.count("a~") == log.count("x~") == rounds
    if min_rounds < rounds < max_rounds:
        assert sum(a[:-1]) + sum(x[:-1]) < budget_ms <= sum(a) + sum(x)  # stopped at the first round over budget


def test_normalisation_cancels_a_drift_that_hits_both_models_of_a_round():
    anchor, model = StubRunner("a", 4.0), StubRunner("x", 1.0)
    samples = ([], [])
    for slowdown in (1.0, 1.3, 0.8, 1.5):  # the machine's speed changes between rounds
        anchor.slowdown = model.slowdown = slowdown
        a, x = time_paired(anchor, model, min_rounds=1, max_rounds=1, budget_ms=0.0, timer=None)
        samples[0].extend(a)
        samples[1].extend(x)
    block = PairBlock(Arch.parse("1-32-64-1-32"), BERT_BASE, samples[1], samples[0])
    assert np.ptp(samples[1]) > 0.5  # the raw times scatter ...
    assert block.ratio() == pytest.approx(0.25)  # ... the ratio to the anchor does not
    record = anchored_record(block, {BERT_BASE: 1.0}, 300.0, ("torch", "cpu", 1, 1, 128, "cpu"))
    assert record.ratio == pytest.approx(0.25) and record.median_ms == pytest.approx(75.0)
    assert record.raw_median_ms == pytest.approx(np.median(samples[1])) and record.repeats == 4


def test_chain_multiplies_links_up_to_bert_base():
    small, mid = Arch.parse("1-64-64-1-64"), Arch.parse("2-128-128-2-128")
    # pooled (lower samples, upper samples) of each link; the third round of each is disturbed
    links = {(small, mid): ([1.0, 1.0, 9.0], [2.0, 2.0, 2.0]), (mid, BERT_BASE): ([2.0, 2.0, 2.0], [20.0, 20.0, 90.0])}
    chain = chain_ratios(links)
    assert chain[BERT_BASE] == 1.0
    assert chain[mid] == pytest.approx(0.1) and chain[small] == pytest.approx(0.05)
    with pytest.raises(UserError, match="not chained"):
        chain_ratios({(small, mid): ([1.0], [2.0])})


def test_measure_latency_anchored_on_stub_models(stub_models):
    archs = ["1-32-64-1-32", "2-256-512-4-256", "5-512-1024-8-512"]
    records = measure_latency(archs, warmup=1, repeats=3, budget_s=0.0, reference=True)
    assert [str(r.arch) for r in records] == archs + [str(BERT_BASE)]
    ref = records[-1]
    assert ref.is_reference and ref.ratio == 1.0 and ref.median_ms == pytest.approx(stub_ms(BERT_BASE))
    for r in records[:-1]:  # every ratio is exact: the stub models never drift
        assert r.ratio == pytest.approx(stub_ms(r.arch) / stub_ms(BERT_BASE))
        assert ref.median_ms / r.median_ms == pytest.approx(stub_ms(BERT_BASE) / stub_ms(r.arch))
        assert r.repeats == 3 and len(r.anchor_samples_ms) == 3
    # the nearest anchor (log scale) of each: the smallest rung, the middle one, the largest one
    assert [r.anchor for r in records[:-1]] == [ANCHORS[0], ANCHORS[1], ANCHORS[2]]
    # BERT-base: timed in both calibrations (start and end), 3 rounds each
    assert ref.repeats == 6 and stub_models.count(str(BERT_BASE)) == 6
    back = type(records[0]).from_dict(json.loads(json.dumps(records[0].to_dict())))
    assert back.ratio == pytest.approx(records[0].ratio) and back.anchor == records[0].anchor
    assert back.anchor_samples_ms == pytest.approx(records[0].anchor_samples_ms)


def test_measure_latency_without_reference_times_interleaved(stub_models):
    (record,) = measure_latency(["1-32-64-1-32"], warmup=0, repeats=2, reference=False, timer=lambda: 0.0)
    assert record.ratio is None and record.anchor is None and record.repeats == 2
    assert str(BERT_BASE) not in stub_models and not any(a in stub_models for a in ANCHORS)


def test_dataset_file_calibrates_renormalises_and_resumes(stub_models, tmp_path):
    out = tmp_path / "lat.jsonl"
    kwargs = dict(warmup=0, repeats=2, budget_s=0.0, reference_every=2, progress=False)
    first = measure_dataset(TINY_SPACE, 3, out, **kwargs)
    assert (first.measured, first.references) == (3, 3)  # calibrations before archs 1 and 3, and at the end
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    calibrate = ["calibration"] * len(ANCHORS) + ["reference"]
    assert [r["kind"] for r in rows] == calibrate + ["arch"] * 2 + calibrate + ["arch"] + calibrate
    assert {r["protocol"] for r in rows} == {"anchored"} and {r["statistic"] for r in rows} == {"quiet"}
    data = read_dataset(out)
    assert len(data.records) == 3 and len(data.references) == 3 and len(data.calibration) == 3 * len(ANCHORS)
    assert data.reference_ms == pytest.approx(stub_ms(BERT_BASE))
    for r in data.records:
        assert r.ratio == pytest.approx(stub_ms(r.arch) / stub_ms(BERT_BASE))
        assert r.median_ms == pytest.approx(stub_ms(r.arch))
    # grow it: the three are skipped; the file keeps one scale
    second = measure_dataset(TINY_SPACE, 4, out, **kwargs)
    assert (second.measured, second.skipped) == (1, 3)
    assert len(read_dataset(out).records) == 4
    # another protocol on the same file is refused before anything is written
    size = out.stat().st_size
    with pytest.raises(UserError, match="protocol"):
        measure_dataset(TINY_SPACE, 5, out, **{**kwargs, "protocol": "interleaved"})
    assert out.stat().st_size == size


def test_renormalising_rescales_a_campaign_that_ran_slower(stub_models, tmp_path):
    # the same archs measured on a machine twice as slow: raw ms double, ratios and speedups do not move
    fast, slow = tmp_path / "fast.jsonl", tmp_path / "slow.jsonl"
    kwargs = dict(warmup=0, repeats=2, budget_s=0.0, reference_every=10, progress=False)
    measure_dataset(TINY_SPACE, 3, fast, **kwargs)
    original = StubRunner.time_once
    StubRunner.time_once = lambda self, timer: 2 * original(self, timer)
    try:
        measure_dataset(TINY_SPACE, 3, slow, **kwargs)
    finally:
        StubRunner.time_once = original
    a, b = read_dataset(fast), read_dataset(slow)
    assert b.reference_ms == pytest.approx(2 * a.reference_ms)
    for ra, rb in zip(a.records, b.records):
        assert rb.raw_median_ms == pytest.approx(2 * ra.raw_median_ms)
        assert b.reference_ms / rb.median_ms == pytest.approx(a.reference_ms / ra.median_ms)


def test_passes_time_every_arch_again_beside_its_first_anchor_and_pool(stub_models, tmp_path):
    archs = ["1-32-64-1-32", "5-512-1024-8-512"]
    records = measure_latency(archs, warmup=0, repeats=2, budget_s=0.0, reference=True, passes=3)
    for r in records[:-1]:  # 3 passes x 2 rounds, pooled; ratios exact
        assert r.repeats == 6 and len(r.anchor_samples_ms) == 6
        assert r.ratio == pytest.approx(stub_ms(r.arch) / stub_ms(BERT_BASE))
    # a calibration before each pass and one at the end: BERT-base timed 4 x 2 times; each arch 3 x (a probe run
    # and 2 rounds), built anew in each pass
    assert stub_models.count(str(BERT_BASE)) == 8 and [stub_models.count(a) for a in archs] == [9, 9]

    out = tmp_path / "lat.jsonl"
    kwargs = dict(warmup=0, repeats=2, budget_s=0.0, reference_every=10, progress=False, passes=2)
    first = measure_dataset(TINY_SPACE, 3, out, **kwargs)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    arch_rows = [r for r in rows if r["kind"] == "arch"]
    assert first.measured == 6 and [r["pass"] for r in arch_rows] == [0, 0, 0, 1, 1, 1]
    assert [r["anchor"] for r in arch_rows[:3]] == [r["anchor"] for r in arch_rows[3:]]
    data = read_dataset(out)
    assert len(data.records) == 3 and all(r.repeats == 4 for r in data.records)  # one record per arch, pooled
    assert all(r.ratio == pytest.approx(stub_ms(r.arch) / stub_ms(BERT_BASE)) for r in data.records)
    # a kill during the second pass: its finished lines stay, the rest of the pass runs on the rerun
    lines = out.read_text().splitlines(keepends=True)
    last_arch = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "arch")
    out.write_text("".join(lines[:last_arch]) + lines[last_arch][:20])  # torn mid-line
    again = measure_dataset(TINY_SPACE, 3, out, **kwargs)
    assert (again.measured, again.skipped) == (1, 5)  # (arch, pass) pairs
    pooled = read_dataset(out)
    assert len(pooled.records) == 3 and all(r.repeats == 4 for r in pooled.records)


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "fastest"}, "protocol"),
    ({"passes": 0}, "passes"),
    ({"budget_s": -1.0}, "budget_s"),
    ({"max_repeats": 2, "repeats": 3}, "max_repeats"),
    ({"statistic": "mode"}, "statistic"),
])
def test_bad_protocol_requests_fail_before_any_work(stub_models, kwargs, message):
    with pytest.raises(UserError, match=message):
        measure_latency(["1-32-64-1-32"], reference=True, **kwargs)
    assert stub_models == []


@pytest.mark.parametrize("anchors, message", [
    ([str(BERT_BASE)], "top of the anchor ladder"),
    (["1-32-64-1-32", "1-32-64-1-32"], "repeat"),
])
def test_bad_anchors(stub_models, anchors, message):
    with pytest.raises(UserError, match=message):
        measure_latency(["1-32-64-1-32"], reference=True, anchors=anchors, budget_s=0.0)


def test_calibration_row_without_anchor_samples_is_refused(stub_models, tmp_path):
    out = tmp_path / "lat.jsonl"
    measure_dataset(TINY_SPACE, 1, out, warmup=0, repeats=1, budget_s=0.0, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[0]["anchor_samples_ms"] = []
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="anchor samples"):
        read_dataset(out)


def test_link_budget_is_4x_an_arch_and_8x_a_pass_with_several_passes():
    from autotinybert.latency.measure import link_budget_ms

    assert link_budget_ms(0.1, 1) == pytest.approx(400.0)  # the demo: one pass, as before passes existed
    assert link_budget_ms(1.5, 3) == pytest.approx(4000.0)  # the default: 8 x the 0.5 s pass
