"""Latency measurement: statistics on a stubbed timer, interleaving, real tiny models, ONNX Runtime parity."""

import json

import numpy as np
import pytest
import torch

from autotinybert import BERT_BASE, Arch
from autotinybert.errors import UserError
from autotinybert.latency import LatencyRecord, build_model, measure_latency, summarize, time_interleaved
from autotinybert.latency.measure import OnnxRuntimeRunner, random_input_ids

TINY = Arch.parse("1-32-64-2-32")
TINY2 = Arch.parse("2-48-96-3-48")


class StubTimer:
    """A clock that advances by the next scripted duration (seconds) on every second call (start, stop)."""

    def __init__(self, durations_s):
        self.durations = list(durations_s)
        self.now = 0.0
        self.calls = 0

    def __call__(self):
        if self.calls % 2 == 1:
            self.now += self.durations.pop(0)
        self.calls += 1
        return self.now


class StubRunner:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def forward(self):
        self.log.append(self.name + "~")  # an untimed run

    def time_once(self, timer):
        t0 = timer()
        self.log.append(self.name)
        return (timer() - t0) * 1e3

    def close(self):
        pass


def test_summarize_median_iqr_count():
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats.median_ms == 3.0
    assert stats.iqr_ms == pytest.approx(4.0 - 2.0)  # numpy's linear percentiles of 1..5
    assert stats.repeats == 5
    assert summarize([7.0]).iqr_ms == 0.0
    with pytest.raises(UserError, match="repeats"):
        summarize([])


def test_interleaving_and_warmup_on_a_stubbed_timer():
    log = []
    runners = [StubRunner("a", log), StubRunner("b", log)]
    # 1 warm-up round (durations 100 s, ignored), then 3 rounds: a = 1, 2, 9 ms; b = 10, 30, 20 ms
    timer = StubTimer([100, 100, 0.001, 0.010, 0.002, 0.030, 0.009, 0.020])
    samples = time_interleaved(runners, warmup=1, repeats=3, timer=timer)
    # every round runs every model once (drift hits them alike), each timed run right after an untimed run of
    # the same model (so no model is timed with the previous model's weights in the caches)
    assert log == ["a", "b"] + ["a~", "a", "b~", "b"] * 3
    assert samples[0] == pytest.approx([1, 2, 9])
    assert samples[1] == pytest.approx([10, 30, 20])
    assert summarize(samples[0]).median_ms == pytest.approx(2.0)
    assert summarize(samples[1]).iqr_ms == pytest.approx(25.0 - 15.0)
    log.clear()
    time_interleaved(runners, warmup=0, repeats=2, timer=StubTimer([0.0] * 4), settle=0)
    assert log == ["a", "b"] * 2


def test_measure_latency_real_models_with_stub_timer_and_reference():
    # scripted durations: warm-up 2 models x 1, then 3 rounds of (tiny, tiny2, BERT-base)
    script = [1.0] * 3 + [0.001, 0.002, 0.100, 0.003, 0.004, 0.300, 0.002, 0.003, 0.200]
    records = measure_latency([TINY, "2-48-96-3-48"], warmup=1, repeats=3, reference=True,
                              protocol="interleaved", timer=StubTimer(script))
    assert [str(r.arch) for r in records] == [str(TINY), str(TINY2), str(BERT_BASE)]
    assert [r.is_reference for r in records] == [False, False, True]
    assert [r.median_ms for r in records] == pytest.approx([2.0, 3.0, 200.0])
    assert records[0].repeats == 3 and records[0].samples_ms == pytest.approx([1, 3, 2])
    assert records[2].median_ms / records[0].median_ms == pytest.approx(100.0)
    back = LatencyRecord.from_dict(json.loads(json.dumps(records[1].to_dict())))
    assert back.arch == TINY2 and back.median_ms == pytest.approx(3.0) and back.settings == records[1].settings


def test_measure_latency_on_the_real_clock_restores_threads():
    before = torch.get_num_threads()
    (record,) = measure_latency([TINY], warmup=1, repeats=3, threads=1, clock="cpu")
    assert record.median_ms > 0 and record.repeats == 3 and record.clock == "cpu"
    assert torch.get_num_threads() == before
    # the anchored protocol (the default with the reference): one small anchor, no time budget beyond 2 rounds
    record, ref = measure_latency([TINY], warmup=1, repeats=2, budget_s=0.0, threads=1, clock="cpu",
                                  reference=True, anchors=[TINY2])
    assert record.anchor == str(TINY2) and record.repeats == 2 and 0 < record.ratio < 1
    assert ref.is_reference and ref.repeats == 4 and ref.median_ms / record.median_ms == pytest.approx(1 / record.ratio)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "tensorrt"}, "backend"),
    ({"device": "tpu"}, "device"),
    ({"threads": 0}, "threads"),
    ({"seq_len": 1024}, "512"),
    ({"repeats": 0}, "repeats"),
    ({"warmup": -1}, "warmup"),
    ({"clock": "cpu", "threads": 2}, "one thread"),
    ({"clock": "sundial"}, "clock"),
])
def test_bad_requests_fail_before_any_work(kwargs, message):
    with pytest.raises(UserError, match=message):
        measure_latency([TINY], **kwargs)


def test_built_model_is_seeded_eval_and_finite():
    a, b = build_model(TINY, seed=3), build_model(TINY, seed=3)
    assert not a.training
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
        assert torch.isfinite(pa).all() and pa.abs().max() <= 0.02
    with torch.inference_mode():
        out = a(random_input_ids(1, 16), return_dict=True).last_hidden_state
    assert out.shape == (1, 16, 32) and torch.isfinite(out).all()


def test_onnxruntime_backend_matches_eager_outputs():
    pytest.importorskip("onnxruntime")
    runner = OnnxRuntimeRunner(TINY2, batch=2, seq_len=16, threads=1, seed=5)
    hidden, pooled = runner.forward()
    model = build_model(TINY2, seed=5)
    with torch.inference_mode():
        ref = model(random_input_ids(2, 16, seed=5), return_dict=True)
    np.testing.assert_allclose(hidden, ref.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=1e-4)
    assert runner.time_once(lambda: 0.0) == 0.0
