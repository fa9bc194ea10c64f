"""Every metric against values computed by hand; SQuAD's official answer normalisation."""

import math

import pytest

from autotinybert.downstream import get_task, glue_metrics, normalize_answer, squad_metrics
from autotinybert.downstream.metrics import correlations, exact_match, f1_score
from autotinybert.downstream.suite import aggregate

PREDS, LABELS = [1, 0, 1, 1], [1, 0, 0, 1]  # TP 2, TN 1, FP 1, FN 0


def test_accuracy_f1_matthews():
    mrpc = glue_metrics(get_task("mrpc"), PREDS, LABELS)
    assert mrpc["accuracy"] == pytest.approx(0.75)
    assert mrpc["f1"] == pytest.approx(0.8)                       # P 2/3, R 1
    assert mrpc["accuracy_f1"] == pytest.approx(0.775)
    cola = glue_metrics(get_task("cola"), PREDS, LABELS)
    assert cola["mcc"] == pytest.approx(2 / math.sqrt(12))        # (TP*TN - FP*FN) / sqrt(3*2*1*2)
    assert set(glue_metrics(get_task("rte"), PREDS, LABELS)) == {"accuracy"}
    assert glue_metrics(get_task("cola"), [1, 1, 1], [1, 0, 1])["mcc"] == 0.0  # constant prediction


def test_pearson_spearman():
    c = correlations([1, 2, 3, 4], [1, 2, 3, 5])
    assert c["pearson"] == pytest.approx(6.5 / math.sqrt(5 * 8.75))
    assert c["spearman"] == pytest.approx(1.0)                    # same order
    assert c["pearson_spearman"] == pytest.approx((c["pearson"] + 1.0) / 2)
    assert correlations([2, 2, 2], [1, 2, 3]) == {"pearson": 0.0, "spearman": 0.0, "pearson_spearman": 0.0}
    assert glue_metrics(get_task("stsb"), [3, 2, 1], [1, 2, 3])["spearman"] == pytest.approx(-1.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue_metrics(get_task("sst2"), [1, 0, 1], [1, 0])


@pytest.mark.parametrize("text, expected", [
    ("The Cat", "cat"),                       # articles and case
    ("an apple a day", "apple day"),
    ("  New   York\tCity \n", "new york city"),  # whitespace
    ("U.S.A.!", "usa"),                       # punctuation removed, not split
    ("theatre", "theatre"),                   # 'the' only as a whole word
    ("Anne, the queen's", "anne queens"),
])
def test_squad_normalisation(text, expected):
    assert normalize_answer(text) == expected


def test_squad_em_f1_with_several_gold_answers():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert f1_score("the cat sat on mat", "a cat on the mat") == pytest.approx(6 / 7)  # P 3/4, R 1
    assert f1_score("dog", "cat") == 0.0
    gold = {"q1": ["Denver Broncos", "The Denver Broncos"], "q2": ["1990", "in 1990"], "q3": ["x"]}
    preds = {"q1": "the Denver Broncos!", "q2": "1990 season"}  # q3 unanswered counts 0
    m = squad_metrics(preds, gold)
    assert m["exact_match"] == pytest.approx(1 / 3)
    # q1: 1; q2: max(F1 vs "1990" = 2/3, vs "in 1990" = 1/2) = 2/3; q3: 0
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_suite_aggregates():
    score, avg = aggregate({"squad": 0.8, "sst2": 0.9, "mrpc": 0.7})
    assert score == pytest.approx(0.8) and avg == pytest.approx(0.8)
    score, avg = aggregate({"squad": 0.5, "sst2": 0.9})
    assert score == pytest.approx(0.9) and avg == pytest.approx(0.7)
    assert aggregate({"squad": 0.5}) == (None, 0.5)
