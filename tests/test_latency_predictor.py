"""Latency predictors: exact recovery of the analytic model, fit/CV/choice, file round trips, device checks."""

import json
import warnings

import numpy as np
import pytest

from autotinybert import Arch, BERT_BASE
from autotinybert.errors import UserError
from autotinybert.latency import (AnalyticModel, DeviceMismatchError, DeviceMismatchWarning, LatencyPredictor,
                                  LatencyRecord, MLPModel, device_record, fit_predictor)
from autotinybert.latency.features import ANALYTIC_TERMS, analytic_terms

FAST_MLP = {"steps": 150, "hidden": 16}


def random_archs(n, seed=0):
    """Archs whose heads and head size vary independently, so every analytic term is identifiable."""
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < n:
        heads = int(rng.choice([1, 2, 4, 8]))
        out.add(Arch(int(rng.integers(1, 9)), int(rng.integers(32, 200)), int(rng.integers(32, 800)), heads,
                     heads * int(rng.choice([8, 16, 32, 64]))))
    return sorted(out)


TRUE_COEF = np.array([0.011, 0.009, 0.02, 0.05, 0.3, 0.1, 0.15, 0.4, 0.7, 0.25])


def synthetic_records(n, batch=1, seq_len=128, seed=0):
    archs = random_archs(n, seed)
    ms = analytic_terms(archs, batch, seq_len) @ TRUE_COEF
    return [LatencyRecord(a, float(t), 0.0, 5, batch=batch, seq_len=seq_len) for a, t in zip(archs, ms)]


def test_analytic_model_recovers_known_coefficients_exactly():
    assert len(TRUE_COEF) == len(ANALYTIC_TERMS)
    for batch, seq_len in ((1, 128), (4, 64)):
        records = synthetic_records(60, batch, seq_len)
        model = AnalyticModel.fit([r.arch for r in records], [r.median_ms for r in records], batch=batch,
                                  seq_len=seq_len)
        assert model.rank == len(ANALYTIC_TERMS)
        np.testing.assert_allclose(model.coef, TRUE_COEF, rtol=1e-6)
        # and it extrapolates to BERT-base, far outside the data
        expected = float((analytic_terms([BERT_BASE], batch, seq_len) @ TRUE_COEF)[0])
        assert model.predict([BERT_BASE])[0] == pytest.approx(expected, rel=1e-6)


def test_collinear_terms_still_predict_exactly():
    # the mlm space ties qkv to heads, so attention MACs and softmax elements are proportional: rank drops by one
    from autotinybert import SearchSpace
    rng = np.random.default_rng(0)
    archs = sorted({SearchSpace.preset("mlm").sample(rng) for _ in range(80)})
    ms = analytic_terms(archs, 1, 128) @ TRUE_COEF
    model = AnalyticModel.fit(archs, ms, batch=1, seq_len=128)
    assert model.rank == len(ANALYTIC_TERMS) - 1
    np.testing.assert_allclose(model.predict(archs), ms, rtol=1e-6)


def test_refuses_to_fit_on_too_few_points():
    records = synthetic_records(30)
    with pytest.raises(UserError, match="at least 10"):
        AnalyticModel.fit([r.arch for r in records[:9]], [r.median_ms for r in records[:9]], batch=1, seq_len=128)
    with pytest.raises(UserError, match="at least 20"):
        fit_predictor(records[:19], reference_ms=100.0)
    with pytest.raises(UserError, match="> 0"):
        AnalyticModel.fit([r.arch for r in records], [0.0] * 30, batch=1, seq_len=128)
    with pytest.raises(UserError, match="reference"):
        fit_predictor(records)  # no BERT-base record and no reference_ms
    mixed = records[:25] + [LatencyRecord(records[0].arch, 1.0, 0.0, 5, threads=2)]
    with pytest.raises(UserError, match="mix"):
        fit_predictor(mixed, reference_ms=100.0)


def test_fit_cross_validates_both_and_picks_the_analytic_model_on_analytic_data():
    records = synthetic_records(40)
    reference = LatencyRecord(BERT_BASE, 250.0, 1.0, 5, is_reference=True)
    predictor = fit_predictor(records + [reference], mlp_options=FAST_MLP)
    report = predictor.report
    assert set(report.cross_validation) == {"analytic", "mlp", "boosted"} and report.n_points == 40
    assert report.chosen == "analytic" and predictor.kind == "analytic"
    assert report.cross_validation["analytic"].mape < 1e-4
    assert report.cross_validation["analytic"].kendall_tau == pytest.approx(1.0)
    assert report.cross_validation["mlp"].mape > report.cross_validation["analytic"].mape
    assert predictor.reference_ms == 250.0
    arch = records[3].arch
    assert predictor.predict(arch) == pytest.approx(records[3].median_ms, rel=1e-5)
    assert predictor.predict_speedup(arch) == pytest.approx(250.0 / records[3].median_ms, rel=1e-5)
    assert predictor.latency_for_speedup(10) == pytest.approx(25.0)
    assert "analytic" in report.describe()


def test_mlp_learns_a_smooth_latency_surface():
    records = synthetic_records(120, seed=1)
    archs, ms = [r.arch for r in records], np.array([r.median_ms for r in records])
    untrained = MLPModel.fit(archs[:100], ms[:100], steps=1, hidden=32, seed=0)
    trained = MLPModel.fit(archs[:100], ms[:100], steps=600, hidden=32, seed=0)
    err = lambda m: np.mean(np.abs(m.predict(archs[100:]) - ms[100:]) / ms[100:])  # noqa: E731
    assert err(trained) < 0.5 * err(untrained)
    again = MLPModel.fit(archs[:100], ms[:100], steps=600, hidden=32, seed=0)
    np.testing.assert_array_equal(again.predict(archs), trained.predict(archs))  # seeded


@pytest.mark.parametrize("kind", ["analytic", "mlp", "boosted"])
@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_predictor_round_trips_through_its_file(tmp_path, kind, suffix):
    predictor = fit_predictor(synthetic_records(30), kind=kind, reference_ms=321.0, folds=3, mlp_options=FAST_MLP)
    path = predictor.save(tmp_path / f"pred{suffix}")
    loaded = LatencyPredictor.load(path)
    archs = [r.arch for r in synthetic_records(10, seed=5)] + [BERT_BASE]
    np.testing.assert_allclose(loaded.predict_many(archs), predictor.predict_many(archs), rtol=1e-12)
    assert loaded.kind == kind and loaded.reference_ms == 321.0 and loaded.device == predictor.device
    assert loaded.report.to_dict() == predictor.report.to_dict()
    if suffix == ".json":
        assert json.loads(path.read_text())["format"] == "autotinybert-latency-predictor"
    assert not list(tmp_path.glob("*.tmp"))


def test_loading_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        LatencyPredictor.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="not a latency predictor"):
        LatencyPredictor.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("garbage")
    with pytest.raises(UserError, match="not a JSON"):
        LatencyPredictor.load(tmp_path / "y.json")


def test_device_mismatch_settings_error_machine_warning():
    predictor = fit_predictor(synthetic_records(30), kind="analytic", reference_ms=300.0,
                              device=device_record("torch", "cpu", 1, 1, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predictor.check_device() == []  # same machine, same settings: silent
    with pytest.raises(DeviceMismatchError, match="threads"):
        predictor.check_device({"threads": 4})
    with pytest.raises(DeviceMismatchError, match="seq_len"):
        predictor.check_device({"seq_len": 256})
    with pytest.warns(DeviceMismatchWarning, match="another machine"):
        found = predictor.check_device({"cpu": "Some Other CPU @ 2.0GHz"})
    assert found and "cpu" in found[0]
    with pytest.raises(DeviceMismatchError, match="another machine"):
        predictor.check_device({"torch": "1.0.0"}, strict=True)


def test_boost_features_of_odd_head_sizes_and_widths():
    from autotinybert.latency.features import BOOST_FEATURES, boost_features

    odd, even = Arch(2, 120, 300, 5, 60), Arch(2, 128, 512, 4, 256)  # head size 12 vs 64
    x = dict(zip(BOOST_FEATURES, boost_features([odd], 1, 128)[0]))
    assert (x["head_size"], x["head_size_mod8"], x["head_size_mod16"]) == (12, 4, 12)
    assert (x["hidden_mod8"], x["hidden_mod16"], x["hidden_mod64"]) == (0, 8, 56)
    assert (x["ffn_mod16"], x["qkv_mod16"]) == (12, 12)
    y = dict(zip(BOOST_FEATURES, boost_features([even], 1, 128)[0]))
    assert y["head_size"] == 64 and y["head_size_mod8"] == y["head_size_mod16"] == y["hidden_mod64"] == 0
    assert y["log_work"] > x["log_work"]
    assert boost_features([], 1, 128).shape == (0, len(BOOST_FEATURES))


def width_jump_records(n, seed=0):
    """Analytic latency, 25 % slower when the hidden size is not a multiple of 16 (a kernel-choice jump)."""
    archs = random_archs(n, seed)
    ms = analytic_terms(archs, 1, 128) @ TRUE_COEF * np.array([1.25 if a.hidden % 16 else 1.0 for a in archs])
    return [LatencyRecord(a, float(t), 0.0, 5) for a, t in zip(archs, ms)]


def test_boosted_model_learns_a_width_jump_the_analytic_model_misses():
    from autotinybert.latency import BoostedModel

    records = width_jump_records(300)
    archs, ms = [r.arch for r in records], np.array([r.median_ms for r in records])
    boosted = BoostedModel.fit(archs[:200], ms[:200], batch=1, seq_len=128)
    analytic = AnalyticModel.fit(archs[:200], ms[:200], batch=1, seq_len=128)
    err = lambda m: np.mean(np.abs(m.predict(archs[200:]) - ms[200:]) / ms[200:])  # noqa: E731
    assert err(boosted) < 0.3 * err(analytic)
    predictor = fit_predictor(records[:200], reference_ms=300.0, mlp_options=FAST_MLP)
    assert predictor.kind == "boosted"  # chosen by cross-validation


def test_boosted_trees_predict_as_scikit_learn_does():
    from sklearn.ensemble import GradientBoostingRegressor

    from autotinybert.latency import BoostedModel
    from autotinybert.latency.features import boost_features

    records = width_jump_records(120, seed=3)
    archs, ms = [r.arch for r in records], np.array([r.median_ms for r in records])
    model = BoostedModel.fit(archs, ms, batch=1, seq_len=128, n_estimators=40, seed=2)
    reference = GradientBoostingRegressor(n_estimators=40, learning_rate=0.05, max_depth=3, min_samples_leaf=4,
                                          subsample=0.8, init="zero", random_state=2)
    residual = np.log(ms) - np.log(model.base.predict(archs))
    reference.fit(boost_features(archs, 1, 128), residual - residual.mean())
    others = random_archs(30, seed=9) + [BERT_BASE]
    expected = model.base.predict(others) * np.exp(model.offset + reference.predict(boost_features(others, 1, 128)))
    np.testing.assert_allclose(model.predict(others), expected, rtol=1e-10)


def test_boosted_predictor_file_is_json_with_plain_tree_arrays(tmp_path):
    predictor = fit_predictor(width_jump_records(40), kind="boosted", reference_ms=300.0, folds=3)
    data = json.loads(predictor.save(tmp_path / "p.json").read_text())
    assert data["kind"] == "boosted" and data["model"]["trees"] == 300
    assert set(data["arrays"]) == {"base_coef", "feature", "threshold", "left", "right", "value", "starts"}
    data["model"]["features"] = ["layers"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="tree features"):
        LatencyPredictor.load(tmp_path / "old.json")
