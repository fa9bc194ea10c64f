"""Search: latency window, bounded admissible sampling, roulette wheel, grid mutation, methods, determinism."""

import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from autotinybert import Arch, SearchSpace
from autotinybert.search import (AdmissibleSampler, FlopsLatencyModel, InfeasibleTargetError, LatencyWindow,
                                 MethodParams, SearchConfig, SearchConfigError, TargetError, propose_generation,
                                 roulette_select, run_search, satisfies_fast_rule)

PREDICTOR = FlopsLatencyModel(reference_ms=100.0)


def smooth_score(arch: Arch) -> dict:
    """A deterministic stand-in for downstream scores (the evaluator is not under test here)."""
    return {"a": arch.hidden / 256 + 0.2 * arch.layers, "b": 1.0 - abs(arch.ffn - 1.75 * arch.hidden) / 2048}


def sampler_for(space="cpu-mlm", speedup=60.0, window=(0.85, 1.1), max_draws=20_000):
    space = SearchSpace.load(space)
    return AdmissibleSampler(space, PREDICTOR, LatencyWindow.build(PREDICTOR, speedup=speedup, window=window),
                             max_draws=max_draws)


# ----- target and window ---------------------------------------------------------------------------------
def test_window_from_speedup_and_latency():
    w = LatencyWindow.build(PREDICTOR, speedup=10)
    assert w.target_ms == pytest.approx(10.0) and w.low_ms == pytest.approx(8.5) and w.high_ms == pytest.approx(11.0)
    assert w.admits(8.5) and w.admits(11.0) and not w.admits(8.49) and not w.admits(11.01)
    w2 = LatencyWindow.build(PREDICTOR, latency_ms=4.0, window=(0.9, 1.0))
    assert w2.speedup == pytest.approx(25.0) and w2.high_ms == pytest.approx(4.0)
    with pytest.raises(TargetError, match="exactly one"):
        LatencyWindow.build(PREDICTOR, speedup=10, latency_ms=3)
    with pytest.raises(TargetError, match="exactly one"):
        LatencyWindow.build(PREDICTOR)
    with pytest.raises(TargetError, match="above high"):
        LatencyWindow.build(PREDICTOR, speedup=10, window=(1.2, 1.1))
    with pytest.raises(TargetError, match="positive"):
        LatencyWindow.build(PREDICTOR, speedup=-2)

    class NoReference:
        def predict(self, arch):
            return 1.0

    with pytest.raises(TargetError, match="reference_ms"):
        LatencyWindow.build(NoReference(), speedup=2)


@pytest.mark.parametrize("speedup", [1.5, 5000.0])
def test_infeasible_target_says_which_latencies_the_space_reaches(speedup):
    sampler = sampler_for(speedup=speedup)
    with pytest.raises(InfeasibleTargetError) as info:
        sampler.check_feasible()
    lo, hi = PREDICTOR.predict(SearchSpace.preset("cpu-mlm").min_arch), PREDICTOR.predict(SearchSpace.preset("cpu-mlm").max_arch)
    message = str(info.value)
    assert "out of reach" in message and f"{lo:.3f}..{hi:.3f} ms" in message
    # run_search fails the same way before evaluating anything
    calls = []
    with pytest.raises(InfeasibleTargetError, match="out of reach"):
        run_search({"space": "cpu-mlm", "speedup": speedup, "progress": False},
                   evaluator=lambda a: calls.append(a) or 0.0, predictor=PREDICTOR)
    assert calls == []


def test_sampling_is_bounded_when_the_window_holds_too_few_archs():
    # A window inside the reachable range but so narrow that (almost) nothing falls in it: bounded, clear error.
    sampler = sampler_for(speedup=60.0, window=(1.0, 1.0000001), max_draws=500)
    sampler.check_feasible()  # not obviously out of reach ...
    with pytest.raises(InfeasibleTargetError, match="in 500 draws") as info:
        sampler.sample(np.random.default_rng(0))
    assert "reaches predicted latencies" in str(info.value)
    assert sampler.stats.draws == 500


def test_sampled_archs_are_admissible_distinct_and_seeded():
    sampler = sampler_for()
    rng = np.random.default_rng(3)
    taken = set()
    for _ in range(40):
        arch = sampler.sample(rng, exclude=taken)
        assert arch not in taken and sampler.space.contains(arch) and sampler.window.admits(PREDICTOR.predict(arch))
        taken.add(arch)
    again = sampler_for()
    rng2, taken2 = np.random.default_rng(3), set()
    for _ in range(40):
        taken2.add(again.sample(rng2, exclude=taken2))
    assert taken == taken2


# ----- roulette wheel and mutation ---------------------------------------------------------------------
def test_roulette_frequencies_match_fitness_shares():
    fitness = [0.50, 0.60, 0.70, 0.90, 1.30]  # minus the minimum: weights 0, .1, .2, .4, .8
    rng = np.random.default_rng(1234)
    n = 30_000
    counts = Counter(roulette_select(fitness, rng) for _ in range(n))
    assert counts[0] == 0  # the generation's minimum has weight 0
    weights = np.array([0.1, 0.2, 0.4, 0.8])
    observed = np.array([counts[i] for i in range(1, 5)])
    stat = chisquare(observed, n * weights / weights.sum())
    assert stat.pvalue > 1e-3, (observed, stat)
    # equal fitness: uniform
    counts = Counter(roulette_select([2.0, 2.0, 2.0], rng) for _ in range(9000))
    assert chisquare([counts[i] for i in range(3)]).pvalue > 1e-3
    # failed evaluations (None / nan) never win and do not become the minimum
    counts = Counter(roulette_select([None, 1.0, float("nan"), 3.0], rng) for _ in range(2000))
    assert set(counts) == {3}


@pytest.mark.parametrize("name", SearchSpace.presets())
def test_mutation_stays_on_the_grid_including_edge_parents(name):
    space = SearchSpace.preset(name)
    rng = np.random.default_rng(0)
    parents = [space.max_arch, space.min_arch] + [space.sample(rng) for _ in range(20)]
    if space.attention == "heads":  # 12-head parents (the official code crashes on them in the MLM space)
        parents.append(space.sample(rng).replace(heads=space.heads.high, qkv=space.head_size * space.heads.high))
    for parent in parents:
        for _ in range(50):
            child = space.mutate(parent, rng, prob=0.5, max_steps=4)
            assert space.contains(child), (parent, child)
            assert abs(child.layers - parent.layers) <= 1
            for dim in ("hidden", "ffn"):
                step = getattr(space, dim).step
                assert abs(getattr(child, dim) - getattr(parent, dim)) <= 4 * step


def test_fast_rule():
    assert satisfies_fast_rule(Arch.parse("5-432-720-6-384"))  # paper Table F.1, AutoTinyBERT-Fast-S5
    assert satisfies_fast_rule(Arch(4, 320, 512, 5, 320))  # df = 1.6 dm, dqkv = dm: bounds included
    assert not satisfies_fast_rule(Arch(4, 320, 511, 5, 320))
    assert not satisfies_fast_rule(Arch.parse("4-512-2048-8-512"))  # conventional df = 4 dm
    assert not satisfies_fast_rule(Arch(4, 512, 900, 4, 256))  # dqkv = 0.5 dm


@pytest.mark.parametrize("space,speedup", [("cpu-mlm", 80.0), ("cpu-kd", 25.0), ("mlm", 10.0)])
def test_fast_method_one_rule_candidate_per_layer_count(space, speedup):
    sampler = sampler_for(space, speedup)
    plan = propose_generation("fast", 0, seed=0, sampler=sampler, params=MethodParams(), taken=set())
    layers = [p.arch.layers for p in plan.proposals]
    assert len(layers) == len(set(layers)) >= 2
    assert sorted(layers + plan.stats["skipped_layer_counts"]) == list(sampler.space.layers.values())
    for p in plan.proposals:
        assert satisfies_fast_rule(p.arch) and sampler.admissible(p.arch) and p.origin == "rule"


# ----- whole searches (stub evaluator) ------------------------------------------------------------------
def _search(tmp_path=None, **overrides):
    config = {"space": "cpu-mlm", "speedup": 60.0, "generations": 4, "population": 12, "seed": 5,
              "progress": False, **overrides}
    if tmp_path is not None:
        config["out"] = str(tmp_path)
    return run_search(config, evaluator=smooth_score, predictor=PREDICTOR)


@pytest.mark.parametrize("method", ["evolved", "random"])
def test_search_never_evaluates_inadmissible_or_duplicate_archs(method):
    evaluated = []

    def score(arch):
        evaluated.append(arch)
        return smooth_score(arch)

    result = run_search({"space": "cpu-mlm", "speedup": 60.0, "generations": 4, "population": 12, "method": method,
                         "progress": False}, evaluator=score, predictor=PREDICTOR)
    space, window = SearchSpace.preset("cpu-mlm"), result.window
    assert len(evaluated) == 48 == len(set(evaluated)) == len(result.candidates)
    for arch in evaluated:
        assert space.contains(arch) and window.admits(PREDICTOR.predict(arch))
    assert [r.index for r in result.candidates] == list(range(48))
    assert [r.generation for r in result.candidates] == [g for g in range(4) for _ in range(12)]
    origins = Counter(r.origin for r in result.candidates)
    if method == "random":
        assert set(origins) == {"sampled"}
    else:
        assert origins["sampled"] == 12 and origins["mutated"] > 0 and origins["explore"] > 0
        for r in result.candidates:
            if r.origin == "mutated":  # a parent from the previous generation, one grid move away at most
                parents = {c.arch for c in result.candidates if c.generation == r.generation - 1}
                assert r.parent in parents


def test_evolved_search_is_deterministic_and_seed_dependent():
    a, b, c = _search(), _search(), _search(seed=6)
    assert [r.comparable() for r in a.candidates] == [r.comparable() for r in b.candidates]
    assert [r.arch for r in a.candidates] != [r.arch for r in c.candidates]
    assert a.best == sorted(a.candidates, key=lambda r: (-r.fitness, r.index))[:3]


def test_evolution_beats_its_first_generation():
    result = _search(generations=5, population=16)
    first = max(r.fitness for r in result.candidates if r.generation == 0)
    assert result.best[0].fitness > first
    # mutation (pe = 0) alone also climbs: children come from fitter parents
    mutated = _search(generations=5, population=16, explore_prob=0.0)
    by_gen = [np.mean([r.fitness for r in mutated.candidates if r.generation == g]) for g in range(5)]
    assert by_gen[-1] > by_gen[0]


def test_search_files(tmp_path):
    result = _search(tmp_path, top_k=4)
    lines = (tmp_path / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 48
    first = json.loads(lines[0])
    assert set(first) >= {"arch", "generation", "latency_ms", "speedup", "scores", "fitness", "wall_s", "origin"}
    assert first["scores"] == smooth_score(Arch.parse(first["arch"]))
    best = json.loads((tmp_path / "best.json").read_text())
    assert [b["arch"] for b in best["best"]] == [r.arch for r in result.best] and len(best["best"]) == 4
    assert best["window"]["speedup"] == pytest.approx(60.0) and len(best["generations"]) == 4
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["population"] == 12 and config["space"]["name"] == "cpu-mlm"
    assert (tmp_path / "search.png").read_bytes()[:4] == b"\x89PNG"
    # a second run into the same folder must not clobber it
    with pytest.raises(SearchConfigError, match="already holds a search"):
        _search(tmp_path)
    assert len((tmp_path / "candidates.jsonl").read_text().splitlines()) == 48
    _search(tmp_path, overwrite=True, population=5, generations=1)
    assert len((tmp_path / "candidates.jsonl").read_text().splitlines()) == 5


def test_config_errors():
    with pytest.raises(SearchConfigError, match=r"unknown key 'populaton'; did you mean 'population'"):
        SearchConfig.from_dict({"speedup": 2, "populaton": 3})
    with pytest.raises(SearchConfigError, match="exactly one latency target"):
        SearchConfig.from_dict({"speedup": 2, "latency_ms": 3})
    with pytest.raises(SearchConfigError, match="mutation_prob"):
        SearchConfig.from_dict({"speedup": 2, "mutation_prob": 1.5})
    with pytest.raises(SearchConfigError, match="method: input should be 'evolved', 'random', 'fast' or 'pareto'"):
        SearchConfig.from_dict({"speedup": 2, "method": "bayes"})
    with pytest.raises(SearchConfigError, match="needs tasks"):
        SearchConfig.from_dict({"speedup": 2, "evaluator": "finetune", "supernet": "x", "data": "y"})
    # the loss evaluator is the default; its supernet is required where it is built, so that Python callers who
    # pass their own evaluator need none
    assert SearchConfig.from_dict({"speedup": 2}).evaluator == "loss"
    with pytest.raises(SearchConfigError, match="needs a supernet"):
        run_search({"speedup": 2, "space": "cpu-mlm", "progress": False}, predictor=PREDICTOR)
    with pytest.raises(SearchConfigError, match="no search space"):
        run_search({"speedup": 2, "progress": False}, evaluator=smooth_score, predictor=PREDICTOR)
    with pytest.raises(SearchConfigError, match="no latency predictor"):
        run_search({"speedup": 2, "space": "cpu-mlm"}, evaluator=smooth_score)
    config = SearchConfig.from_dict({"latency_ms": 3.5, "window": [0.9, 1.0], "population": 7})
    assert config.window == (0.9, 1.0) and SearchConfig.from_dict(config.to_dict()) == config


def test_evaluator_returning_garbage_is_a_clear_error():
    from autotinybert.search import EvaluatorError

    with pytest.raises(EvaluatorError, match="must be a number"):
        run_search(
            {"space": "cpu-mlm", "speedup": 60.0, "population": 2, "generations": 1, "progress": False},
            evaluator=lambda arch: "good", predictor=PREDICTOR)


def test_failed_evaluations_rank_last_and_are_not_parents():
    def flaky(arch):
        return float("nan") if arch.layers == 4 else smooth_score(arch)["a"]

    result = run_search(
        {"space": "cpu-mlm", "speedup": 60.0, "population": 10, "generations": 3, "progress": False},
        evaluator=flaky, predictor=PREDICTOR)
    failed = [r for r in result.candidates if r.fitness is None]
    assert failed and all(r.fitness is not None for r in result.best)
    failed_archs = {r.arch for r in failed}
    assert not any(r.parent in failed_archs for r in result.candidates)


def test_children_that_cannot_be_placed_fall_back_to_fresh_samples_within_the_bound():
    # pm = 0: every child equals its (already evaluated) parent, so each slot spends its redraws, then falls back
    result = _search(generations=2, population=6, mutation_prob=0.0, explore_prob=0.0, max_redraws=7)
    later = result.generations[1]
    assert later["origins"] == {"fallback": 6} and later["fallback_fresh"] == 6
    assert later["mutation_redraws"] == 6 * 7
    assert len({r.arch for r in result.candidates}) == 12
