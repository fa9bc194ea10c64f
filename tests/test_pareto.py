"""`search method=pareto`: Optuna NSGA-II over the whole space, the front, its files, determinism and resume."""

import json

import pytest

pytest.importorskip("optuna")

from autotinybert import Arch  # noqa: E402
from autotinybert.config import ConfigError  # noqa: E402
from autotinybert.search import FlopsLatencyModel, SearchConfig, read_records, run_search  # noqa: E402
from autotinybert.search.pareto import hypervolume, pareto_front, pick_for_speedup, read_front  # noqa: E402
from autotinybert.search.records import CandidateRecord  # noqa: E402

PREDICTOR = FlopsLatencyModel(reference_ms=100.0)


def score(arch: Arch) -> dict:
    """A deterministic stand-in for an evaluator: grows with size, with diminishing returns."""
    return {"a": (arch.layers * arch.hidden * (arch.ffn + 2 * arch.qkv)) ** 0.25 / 30
            - 0.05 * abs(arch.ffn / arch.hidden - 2.0)}


class Killed(Exception):
    pass


def _pareto(out=None, seed=5, on_record=None, **overrides):
    config = {"space": "cpu-mlm", "method": "pareto", "generations": 4, "population": 10, "seed": seed,
              "progress": False, "plot": out is not None, **overrides}
    if out is not None:
        config["out"] = str(out)
    return run_search(config, evaluator=score, predictor=PREDICTOR, on_record=on_record)


def test_front_is_the_non_dominated_set_and_exact_evaluation_budget():
    result = _pareto()
    records = result.candidates
    assert len(records) == 4 * 10  # generations x population, each a new arch
    assert len({r.arch for r in records}) == len(records)
    front = result.front
    assert front == pareto_front(records)
    assert [r.latency_ms for r in front] == sorted(r.latency_ms for r in front)
    assert all(a.fitness < b.fitness for a, b in zip(front, front[1:]))  # slower only when better
    on_front = {r.arch for r in front}
    for r in records:  # every candidate off the front is dominated by one on it
        if r.arch not in on_front:
            assert any(f.latency_ms <= r.latency_ms and f.fitness >= r.fitness for f in front), r.arch


def test_pareto_is_deterministic_and_seed_dependent():
    a, b, c = _pareto(seed=5), _pareto(seed=5), _pareto(seed=6)
    assert [r.comparable() for r in a.candidates] == [r.comparable() for r in b.candidates]
    assert [r.arch for r in a.candidates] != [r.arch for r in c.candidates]


def test_kill_and_resume_gives_the_same_candidates_and_front(tmp_path):
    reference = _pareto(tmp_path / "whole")
    seen = []

    def kill_after_13(record):
        seen.append(record)
        if len(seen) == 13:  # in generation 1, mid-way
            raise Killed

    with pytest.raises(Killed):
        _pareto(tmp_path / "killed", on_record=kill_after_13)
    assert len(read_records(tmp_path / "killed" / "candidates.jsonl")) == 13
    with pytest.raises(ConfigError, match="resume=true"):
        _pareto(tmp_path / "killed")
    resumed = _pareto(tmp_path / "killed", resume=True)
    assert resumed.resumed == 13 and resumed.evaluated == 27
    assert [r.comparable() for r in resumed.candidates] == [r.comparable() for r in reference.candidates]
    assert (tmp_path / "killed" / "pareto.jsonl").read_text() == (tmp_path / "whole" / "pareto.jsonl").read_text()
    assert [r.arch for r in read_front(tmp_path / "killed")] == [r.arch for r in reference.front]
    best = json.loads((tmp_path / "killed" / "best.json").read_text())
    assert best["method"] == "pareto" and best["evaluated"] == 40 and best["hypervolume"] > 0
    assert (tmp_path / "killed" / "pareto.png").stat().st_size > 1000
    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    assert config["window"]["low_ms"] == pytest.approx(PREDICTOR.predict(Arch.parse("1-128-128-1-64")))


def test_resume_with_other_settings_is_refused(tmp_path):
    _pareto(tmp_path, generations=1)
    with pytest.raises(ConfigError, match="differs"):
        _pareto(tmp_path, generations=1, population=12, resume=True)


def test_pareto_takes_no_target():
    with pytest.raises(ConfigError, match="no target"):
        SearchConfig.from_dict({"method": "pareto", "speedup": 4.0})
    with pytest.raises(ConfigError, match="exactly one latency target"):
        SearchConfig.from_dict({"method": "evolved"})


def _rec(i, ms, fit):
    return CandidateRecord(index=i, generation=0, slot=i, arch=f"1-128-128-1-{64 * (i + 1)}", latency_ms=ms,
                           speedup=100 / ms, scores={}, fitness=fit, origin="sampled", parent=None, wall_s=0.0)


def test_hypervolume_and_front_by_hand():
    records = [_rec(0, 1.0, 0.5), _rec(1, 2.0, 0.7), _rec(2, 2.5, 0.6), _rec(3, 3.0, 0.9), _rec(4, 0.5, None)]
    front = pareto_front(records)
    assert [r.index for r in front] == [0, 1, 3]  # 2 is dominated by 1; 4 failed
    # reference (score 0.0, 4 ms): strips [1,2) x 0.5 + [2,3) x 0.7 + [3,4) x 0.9
    points = [(r.fitness, r.latency_ms) for r in front]
    assert hypervolume(points, (0.0, 4.0)) == pytest.approx(0.5 + 0.7 + 0.9)
    assert hypervolume(points + [(0.6, 2.5)], (0.0, 4.0)) == pytest.approx(2.1)  # dominated points add nothing
    assert hypervolume([(0.5, 5.0)], (0.0, 4.0)) == 0.0
    assert pick_for_speedup(front, 100.0, 50.0, high=1.0).index == 1  # budget 2 ms: the best within it
    assert pick_for_speedup(front, 100.0, 200.0, high=1.0) is None


# ----- the pipeline: search.method pareto ------------------------------------------------------------------------
def test_pipeline_plans_one_pareto_search_and_a_pick_per_target(tmp_path):
    from autotinybert.pipeline.config import DemoConfig
    from autotinybert.pipeline.plan import plan

    cfg = DemoConfig.from_dict({**DemoConfig.embedded(checkpoint=False).to_dict(), "out": str(tmp_path)},
                               ["search.method=pareto", "latency.backend=onnxruntime-int8"])
    assert cfg.latency.timing_kwargs()["backend"] == "onnxruntime-int8"  # the latency stage times INT8 ONNX
    stages = {s.name: s for s in plan(cfg)}
    assert "pareto" in stages and stages["pareto"].upstream == ("supernet", "predictor")
    for speedup in cfg.search.speedups:
        pick_stage = stages[f"search-{speedup:g}x"]
        assert pick_stage.upstream == ("pareto", "predictor")
    assert set(stages["extract"].upstream) >= {f"search-{s:g}x" for s in cfg.search.speedups}


def test_pipeline_pick_takes_the_best_front_member_within_the_budget(tmp_path):
    from autotinybert.errors import UserError
    from autotinybert.pipeline.pareto import ParetoOutputs, PickInputs, pick
    from autotinybert.pipeline.stage_types import PredictorOutputs, SearchPick

    front = [SearchPick(arch=f"1-128-128-1-{64 * i}", predicted_ms=ms, predicted_speedup=100 / ms, fitness=fit,
                        scores={"a": fit}) for i, (ms, fit) in enumerate([(1.0, 0.5), (2.0, 0.7), (5.0, 0.9)], 1)]
    outputs = ParetoOutputs(out="x", front=front, evaluated=40, generations=[], hypervolume=1.0)
    predictor = PredictorOutputs(predictor="p.json", reference_ms=100.0, chosen="analytic")
    got = pick(PickInputs(speedup=40.0, window=(0.85, 1.1), top_k=2, front=outputs, predictor=predictor),
               tmp_path, False)  # budget 2.75 ms: 2.0 ms (0.7) then 1.0 ms (0.5)
    assert got.arch == front[1].arch and [p.arch for p in got.top] == [front[1].arch, front[0].arch]
    assert json.loads((tmp_path / "pick.json").read_text())["budget_ms"] == pytest.approx(2.75)
    with pytest.raises(UserError, match="no arch on the Pareto front"):
        pick(PickInputs(speedup=200.0, window=(0.85, 1.1), top_k=2, front=outputs, predictor=predictor),
             tmp_path, False)
