"""Ranking quality of a proxy: pairwise accuracy (paper Appendix E) and Kendall tau between two score sets.

Pairwise accuracy (paper eq. 5, after Luo et al. 2019), over ordered pairs of distinct archs:

    sum 1[f(a1) >= f(a2)] * 1[s(a1) >= s(a2)]  /  sum 1[f(a1) >= f(a2)]

i.e. of the pairs that the proxy f orders one way, the share that the reference s orders the same way. Without
ties this is the share of unordered pairs ordered the same way by both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError


class RankingError(UserError):
    """Score sets that cannot be compared."""


@dataclass(frozen=True)
class RankingQuality:
    n: int  # archs compared
    pairs: int  # unordered pairs of distinct archs
    pairwise_accuracy: float
    kendall_tau: float  # tau-b (accounts for ties)
    kendall_p_value: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _arrays(f: Sequence[float], s: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(f, dtype=np.float64), np.asarray(s, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise RankingError(f"score lists must be 1-D and equally long; got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise RankingError(f"ranking quality needs at least 2 archs scored by both; got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise RankingError("scores must be finite numbers (a failed evaluation cannot be ranked)")
    return a, b


def pairwise_accuracy(f: Sequence[float], s: Sequence[float]) -> float:
    """Paper eq. 5 over ordered pairs of distinct items (see the module docstring)."""
    a, b = _arrays(f, s)
    off_diagonal = ~np.eye(len(a), dtype=bool)
    f_ge = (a[:, None] >= a[None, :]) & off_diagonal  # (n, n): f(a_i) >= f(a_j)
    s_ge = b[:, None] >= b[None, :]
    return float((f_ge & s_ge).sum() / f_ge.sum())


def kendall_tau(f: Sequence[float], s: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value (scipy). NaN tau when one side is constant."""
    from scipy.stats import kendalltau

    a, b = _arrays(f, s)
    result = kendalltau(a, b)
    return float(result.statistic), float(result.pvalue)


def ranking_quality(f: Sequence[float], s: Sequence[float]) -> RankingQuality:
    a, _ = _arrays(f, s)
    tau, p = kendall_tau(f, s)
    n = len(a)
    return RankingQuality(n, n * (n - 1) // 2, pairwise_accuracy(f, s), tau, p)


def load_scores(path: str | Path, key: str = "fitness", negate: bool = False) -> dict[str, float]:
    """``{arch: score}`` from a JSONL file whose lines hold ``"arch"`` and `key` (e.g. a ``candidates.jsonl``, where
    `key` may also name a per-task score under ``"scores"``), or from a JSON object ``{arch: score}``.

    `negate` flips the sign, for lower-is-better scores such as a loss.
    """
    from ..arch import Arch

    path = Path(path)
    if not path.is_file():
        raise RankingError(f"score file {path} is a folder; give a candidates.jsonl or a JSON file" if path.is_dir()
                           else f"score file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RankingError(f"score file {path} is not text (not UTF-8); give a candidates.jsonl or a JSON "
                           "{arch: score} file") from None
    out: dict[str, float] = {}
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # not one JSON document: read it as JSONL
    if isinstance(whole, dict) and "arch" not in whole:
        for arch, value in whole.items():
            out[str(Arch.parse(arch))] = _score(value, f"{path}: {arch}", negate)
        if not out:
            raise RankingError(f"{path} holds no scores")
        return out
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RankingError(f"{path}:{number} is not JSON ({err})") from None
        if not isinstance(row, dict) or "arch" not in row:
            raise RankingError(f"{path}:{number} has no 'arch' field")
        if key in row:
            value = row[key]
        elif isinstance(row.get("scores"), dict) and key in row["scores"]:
            value = row["scores"][key]
        else:
            raise RankingError(f"{path}:{number} has no '{key}' (top-level or under 'scores'); pick one with key_a= / key_b=")
        arch = str(Arch.parse(row["arch"]))
        if arch in out:
            raise RankingError(f"{path}:{number}: arch {arch} appears twice; give each arch one score")
        out[arch] = _score(value, f"{path}:{number}", negate)
    if not out:
        raise RankingError(f"{path} holds no scores")
    return out


def _score(value, where: str, negate: bool) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RankingError(f"{where}: score {value!r} is not a finite number")
    return -float(value) if negate else float(value)


@dataclass(frozen=True)
class Comparison:
    quality: RankingQuality
    archs: list[str]
    only_a: list[str]
    only_b: list[str]


def compare_score_sets(a: dict[str, float], b: dict[str, float]) -> Comparison:
    """Ranking quality over the archs both sets score (a = proxy f, b = reference s)."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise RankingError(f"the two score sets share {len(common)} arch(s); at least 2 are needed")
    quality = ranking_quality([a[k] for k in common], [b[k] for k in common])
    return Comparison(quality, common, sorted(set(a) - set(b)), sorted(set(b) - set(a)))
