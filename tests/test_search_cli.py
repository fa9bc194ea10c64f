"""`autotinybert search` and `autotinybert rank-eval` on the command line; ranking quality on hand-made cases."""

import json

import pytest

from autotinybert import Arch
from autotinybert.cli import main as cli_main
from autotinybert.search import (RankingError, compare_score_sets, kendall_tau, load_scores, pairwise_accuracy,
                                 ranking_quality)

PREDICTOR = "autotinybert.search.target:FlopsLatencyModel"


def score(arch: Arch) -> dict:
    return {"a": arch.hidden / 256 + 0.2 * arch.layers, "b": 1.0 - abs(arch.ffn - 1.75 * arch.hidden) / 2048}


# ----- ranking quality -----------------------------------------------------------------------------------
def test_pairwise_accuracy_and_kendall_tau_on_hand_made_cases():
    s = [1.0, 2.0, 3.0, 4.0]
    assert pairwise_accuracy(s, s) == 1.0 and kendall_tau(s, s)[0] == pytest.approx(1.0)
    assert pairwise_accuracy(s[::-1], s) == 0.0 and kendall_tau(s[::-1], s)[0] == pytest.approx(-1.0)
    one_swap = [2.0, 1.0, 3.0, 4.0]  # 5 of 6 pairs agree
    assert pairwise_accuracy(one_swap, s) == pytest.approx(5 / 6)
    assert kendall_tau(one_swap, s)[0] == pytest.approx((5 - 1) / 6)
    # the paper's formula with a tie in f: ordered pairs with f(a1) >= f(a2) are (0,1), (1,0), (2,0), (2,1);
    # s agrees on three of them
    assert pairwise_accuracy([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(3 / 4)
    # invariant to monotone transforms of either side (e.g. loss -> -loss is a flip, exp is not)
    import math

    f = [0.3, 0.9, 0.1, 0.5, 0.7]
    ref = [10.0, 30.0, 5.0, 40.0, 20.0]
    assert pairwise_accuracy([math.exp(x) for x in f], ref) == pytest.approx(pairwise_accuracy(f, ref))
    q = ranking_quality(f, ref)
    assert q.n == 5 and q.pairs == 10 and q.pairwise_accuracy == pytest.approx(0.8)  # 8 of 10 pairs agree
    with pytest.raises(RankingError, match="at least 2"):
        pairwise_accuracy([1.0], [1.0])
    with pytest.raises(RankingError, match="equally long"):
        pairwise_accuracy([1.0, 2.0], [1.0, 2.0, 3.0])


def test_load_scores_and_compare(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("\n".join(json.dumps({"arch": arch, "scores": {"loss": loss}, "fitness": -loss})
                           for arch, loss in [("1-128-256-2-128", 3.0), ("2-128-256-2-128", 2.5),
                                              ("3-128-256-2-128", 2.0), ("4-128-256-2-128", 2.2)]) + "\n")
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"1-128-256-2-128": 0.6, "2-128-256-2-128": 0.7, "3-128-256-2-128": 0.8,
                             "4-128-256-2-128": 0.75, "4-256-256-2-128": 0.9}))
    by_loss = load_scores(a, "loss", negate=True)
    assert by_loss == load_scores(a, "fitness")
    comparison = compare_score_sets(by_loss, load_scores(b))
    assert comparison.quality.n == 4 and comparison.quality.pairwise_accuracy == 1.0
    assert comparison.only_b == ["4-256-256-2-128"] and comparison.only_a == []
    # the loss itself, un-negated, ranks exactly backwards
    assert compare_score_sets(load_scores(a, "loss"), load_scores(b)).quality.pairwise_accuracy == 0.0
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"arch": "1-128-256-2-128", "fitness": 1}\n{"arch": "1-128-256-2-128", "fitness": 2}\n')
    with pytest.raises(RankingError, match="appears twice"):
        load_scores(dup)
    with pytest.raises(RankingError, match="no 'acc'"):
        load_scores(a, "acc")


def test_rank_eval_cli(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    archs = ["1-128-256-2-128", "2-128-256-2-128", "3-128-256-2-128", "4-128-256-2-128"]
    a.write_text("".join(json.dumps({"arch": x, "fitness": f}) + "\n" for x, f in zip(archs, [1, 2, 3, 4])))
    b.write_text("".join(json.dumps({"arch": x, "scores": {"SST-2": f}}) + "\n" for x, f in zip(archs, [2, 1, 3, 4])))
    assert cli_main(["rank-eval", str(a), str(b), "key_b=SST-2", "as_json=true"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 4 and out["pairwise_accuracy"] == pytest.approx(5 / 6)
    assert out["kendall_tau"] == pytest.approx(4 / 6)
    assert cli_main(["rank-eval", str(a), str(b), "key_b=SST-2"]) == 0
    assert "pairwise acc.    0.8333" in capsys.readouterr().out
    assert cli_main(["rank-eval", str(a), str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- search on the command line ------------------------------------------------------------------------
def test_search_cli_with_a_yaml_config_and_overrides(tmp_path, capsys):
    config = tmp_path / "search.yaml"
    config.write_text("space: cpu-mlm\nspeedup: 60\npopulation: 6\ngenerations: 2\nseed: 1\n"
                      f"predictor: {PREDICTOR}\nevaluator: test_search_cli:score\n")
    out = tmp_path / "run"
    code = cli_main(["search", "--config", str(config), "population=5", f"out={out}", "progress=false",
                     "method=random"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "random search: target" in text and "top 3:" in text
    lines = (out / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 10  # --population overrides the file's 6
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["population"] == 5 and saved["method"] == "random" and saved["speedup"] == 60
    assert (out / "search.png").exists()


def test_search_cli_fast_method(tmp_path, capsys):
    out = tmp_path / "fast"
    code = cli_main(["search", "space=mlm", f"predictor={PREDICTOR}", "speedup=10", "method=fast",
                     "evaluator=test_search_cli:score", f"out={out}", "progress=false", "plot=false"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert sorted(Arch.parse(r["arch"]).layers for r in rows) == list(range(2, 9))  # 1 layer cannot reach 10x
    assert {r["origin"] for r in rows} == {"rule"}


@pytest.mark.parametrize("argv,words", [
    (["speedup=2", "latency_ms=3"], "exactly one latency target"),
    (["speedup=1.2"], "out of reach"),
    (["speedup=10", "evaluator=loss"], "needs a supernet folder"),
    (["speedup=10", "evaluator=finetune", "supernet=x", "data=y"], "needs tasks"),
    (["speedup=10", "evaluator=nomodule_xyz:f"], "cannot import"),
    (["speedup=10", "window=[1.2,0.9]"], "0 < low < high"),
    (["speedup=10", "population=0"], "population: input should be greater than 0"),
    (["speedup=10", "--population", "3"], "written key=value"),
])
def test_search_cli_errors(tmp_path, capsys, argv, words):
    base = ["search", "space=cpu-mlm", f"predictor={PREDICTOR}", "evaluator=test_search_cli:score",
            f"out={tmp_path / 'x'}", "progress=false"]
    try:
        code = cli_main(base + argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "x" / "candidates.jsonl").exists()


def test_search_cli_loads_a_real_latency_predictor_file(tmp_path, capsys):
    latency = pytest.importorskip("autotinybert.latency")
    import numpy as np

    from autotinybert import BERT_BASE, SearchSpace
    from autotinybert.search import FlopsLatencyModel

    # A predictor fitted the way `autotinybert latency fit` fits one, on records whose "measured" latency is the
    # analytic cost plus a fixed overhead (no timing in tests).
    flops, rng = FlopsLatencyModel(reference_ms=80.0), np.random.default_rng(0)
    space = SearchSpace.preset("cpu-mlm")
    archs = [space.sample(rng) for _ in range(60)]
    records = [latency.LatencyRecord(a, flops.predict(a) + 0.5, 0.01, 5) for a in archs]
    records.append(latency.LatencyRecord(BERT_BASE, 80.5, 0.1, 5, is_reference=True))
    predictor = latency.fit_predictor(records, kind="analytic")
    file = predictor.save(tmp_path / "predictor.json")
    out = tmp_path / "run"
    code = cli_main(["search", "space=cpu-mlm", f"predictor={file}", "speedup=25",
                     "evaluator=test_search_cli:score", "population=4", "generations=2",
                     f"out={out}", "progress=false", "plot=false"])
    assert code == 0, capsys.readouterr().err
    loaded = latency.LatencyPredictor.load(file)
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    target = loaded.reference_ms / 25
    for row in rows:
        assert row["latency_ms"] == pytest.approx(loaded.predict(Arch.parse(row["arch"])))
        assert 0.85 * target <= row["latency_ms"] <= 1.1 * target
    assert cli_main(["search", "space=cpu-mlm", f"predictor={tmp_path / 'nope.json'}", "speedup=25",
                     "evaluator=test_search_cli:score", f"out={tmp_path / 'x'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
