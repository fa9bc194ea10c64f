"""The official metrics, as fractions in [0, 1]: GLUE (via scikit-learn / scipy) and SQuAD v1.1 EM / F1.

SQuAD follows the official ``evaluate-v1.1.py``: lower-case, drop punctuation, drop the articles a/an/the,
collapse whitespace; token-level F1; each question scores its max over the gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from .tasks import TaskSpec


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def binary_f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0))


def matthews(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (CoLA); 0 when a side is constant, as scikit-learn defines it."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def correlations(preds: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Pearson, Spearman and their mean (STS-B). Constant predictions give 0 instead of NaN."""
    from scipy.stats import pearsonr, spearmanr

    p, y = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if p.std() == 0 or y.std() == 0:
        pearson = spearman = 0.0
    else:
        pearson, spearman = float(pearsonr(p, y)[0]), float(spearmanr(p, y)[0])
    return {"pearson": pearson, "spearman": spearman, "pearson_spearman": (pearson + spearman) / 2}


def glue_metrics(spec: TaskSpec, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """Every metric GLUE reports for `spec` on one dev split (class indices, or scores for STS-B)."""
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if spec.kind == "regression":
        return correlations(preds, labels)
    out = {"accuracy": accuracy(preds, labels)}
    if spec.name in ("mrpc", "qqp"):
        out["f1"] = binary_f1(preds, labels)
        out["accuracy_f1"] = (out["accuracy"] + out["f1"]) / 2
    if spec.name == "cola":
        out["mcc"] = matthews(preds, labels)
    return out


# ---------------------------------------------------------------- SQuAD v1.1 (official evaluate-v1.1.py)

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, remove punctuation, remove articles, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    true_tokens = normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], gold: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Exact match and F1 over the questions in `gold` (max over each question's answers); missing -> 0."""
    if not gold:
        raise ValueError("no gold answers to score")
    em = f1 = 0.0
    for qid, answers in gold.items():
        answers = list(answers)
        pred = predictions.get(qid)
        if pred is None or not answers:
            continue  # the official script counts an unanswered question as 0
        em += max(exact_match(pred, a) for a in answers)
        f1 += max(f1_score(pred, a) for a in answers)
    return {"exact_match": em / len(gold), "f1": f1 / len(gold)}
