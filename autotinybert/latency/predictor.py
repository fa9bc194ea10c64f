"""`LatencyPredictor`: arch -> milliseconds on the device it was measured on, plus BERT-base's latency there.

`fit_predictor` fits the analytic cost model, the MLP and the boosted model (analytic x trees), scores each by
k-fold cross-validation (out-of-fold predictions: RMSE in ms, MAPE, worst-case error, Kendall tau), keeps the best
(lowest MAPE) refitted on all points, and attaches the `FitReport`. The file (JSON, or safetensors when the path
ends in ``.safetensors``) holds the model, the device record and the reference latency, so ``predict_speedup`` needs
nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_path, atomic_write_json
from .dataset import LatencyDataset
from .device import compare_records, device_record
from .models import MODEL_KINDS, AnalyticModel, BoostedModel, MLPModel
from .measure import LatencyRecord

FORMAT = "autotinybert-latency-predictor"
FORMAT_VERSION = 1


@dataclass
class Metrics:
    """Prediction quality on points the model did not see."""

    n: int
    rmse_ms: float
    mape: float  # percent
    worst_pct: float  # largest absolute percentage error
    kendall_tau: float

    @classmethod
    def of(cls, true_ms: Sequence[float], pred_ms: Sequence[float]) -> Metrics:
        from scipy.stats import kendalltau

        t, p = np.asarray(true_ms, dtype=np.float64), np.asarray(pred_ms, dtype=np.float64)
        pct = np.abs(p - t) / t * 100
        tau = float(kendalltau(t, p).statistic) if len(t) > 1 else float("nan")
        return cls(n=len(t), rmse_ms=float(np.sqrt(np.mean((p - t) ** 2))), mape=float(pct.mean()),
                   worst_pct=float(pct.max()), kendall_tau=tau)


@dataclass
class FitReport:
    """What `fit_predictor` tried and how each candidate did under cross-validation."""

    chosen: str
    n_points: int
    folds: int
    cross_validation: dict[str, Metrics]  # kind -> out-of-fold metrics
    coefficients: dict[str, float] | None = None  # analytic model refitted on all points (ms per unit of term)
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cross_validation"] = {k: asdict(v) for k, v in self.cross_validation.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitReport:
        return cls(chosen=data["chosen"], n_points=int(data["n_points"]), folds=int(data["folds"]),
                   cross_validation={k: Metrics(**v) for k, v in data["cross_validation"].items()},
                   coefficients=data.get("coefficients"), rank=data.get("rank"))

    def describe(self) -> str:
        lines = [f"{'model':<9} {'RMSE ms':>8} {'MAPE %':>7} {'worst %':>8} {'tau':>6}   "
                 f"({self.folds}-fold cross-validation on {self.n_points} archs)"]
        for kind, m in self.cross_validation.items():
            mark = "  <- chosen" if kind == self.chosen else ""
            lines.append(f"{kind:<9} {m.rmse_ms:>8.3f} {m.mape:>7.2f} {m.worst_pct:>8.2f} {m.kendall_tau:>6.3f}{mark}")
        if self.coefficients:
            lines.append("analytic coefficients (ms per million ops; ms per call for layer_calls / fixed):")
            lines += [f"  {k:<14} {v:.6g}" for k, v in self.coefficients.items()]
        return "\n".join(lines)


class LatencyPredictor:
    """Predicts the latency (ms) of an `Arch` on one device and settings; knows BERT-base's latency there."""

    space: dict[str, Any] | None = None  # the search space its latency file sampled (None: not recorded)

    def __init__(self, model: AnalyticModel | MLPModel | BoostedModel, reference_ms: float, device: dict[str, Any],
                 report: FitReport | None = None):
        if not (isinstance(reference_ms, (int, float)) and reference_ms > 0):
            raise UserError(f"reference_ms must be a positive number of milliseconds, got {reference_ms!r}")
        self.model = model
        self.reference_ms = float(reference_ms)
        self.device = dict(device)
        self.report = report

    @property
    def kind(self) -> str:
        return self.model.kind

    def predict(self, arch: Arch | str) -> float:
        """Predicted latency of `arch` in milliseconds."""
        return float(self.model.predict([Arch.parse(arch)])[0])

    def predict_many(self, archs: Sequence[Arch | str]) -> np.ndarray:
        return self.model.predict([Arch.parse(a) for a in archs])

    def predict_speedup(self, arch: Arch | str) -> float:
        """reference_ms / predicted latency: how many times faster than BERT-base on this device."""
        return self.reference_ms / self.predict(arch)

    def latency_for_speedup(self, speedup: float) -> float:
        """The latency budget (ms) that a speedup target means on this device."""
        if not speedup > 0:
            raise UserError(f"speedup must be > 0, got {speedup!r}")
        return self.reference_ms / speedup

    def check_device(self, request: dict[str, Any] | None = None, *, strict: bool = False) -> list[str]:
        """Compare the predictor's device record with `request` (default: this machine, the predictor's settings).

        Different settings (backend, device, threads, batch, seq_len) raise `DeviceMismatchError`: a 1-thread
        latency says nothing about 4 threads. A different CPU/GPU or torch/onnxruntime version warns
        (`DeviceMismatchWarning`) and is returned, since a user may knowingly reuse a predictor on a sibling
        machine; ``strict=True`` makes it an error.
        """
        d = self.device
        current = device_record(d.get("backend", "torch"), d.get("device", "cpu"), d.get("threads", 1),
                                d.get("batch", 1), d.get("seq_len", 128), d.get("clock", "wall"))
        current.update(request or {})
        return compare_records(d, current, strict=strict, what="latency predictor")

    def check_space(self, space) -> None:
        """Refuse a search over archs outside the space this predictor was fitted on (when it recorded one): their
        latencies would be extrapolated, silently wrong. The backend, device and sequence length it timed are in
        `device` (see `check_device`)."""
        if not self.space:
            return
        from ..space import SearchSpace

        fitted = SearchSpace.from_dict(self.space)
        wider = [d for d in ("layers", "hidden", "ffn", "heads")
                 if getattr(space, d).low < getattr(fitted, d).low or getattr(space, d).high > getattr(fitted, d).high]
        if space.qkv is not None and fitted.qkv is not None and (space.qkv.low < fitted.qkv.low
                                                                 or space.qkv.high > fitted.qkv.high):
            wider.append("qkv")
        if wider or space.attention != fitted.attention:
            what = ", ".join(f"{d} {getattr(space, d).low}..{getattr(space, d).high} (fitted "
                             f"{getattr(fitted, d).low}..{getattr(fitted, d).high})" for d in wider) or \
                f"the '{space.attention}' cut (fitted on '{fitted.attention}')"
            raise UserError(f"the latency predictor was fitted on space '{fitted.name}', and the search space "
                            f"'{space.name}' reaches beyond it: {what}; its latencies there would be extrapolated. "
                            f"Measure this space (autotinybert latency measure space=...) and refit, or search a "
                            f"sub-space of '{fitted.name}'")

    def evaluate(self, records: Sequence[LatencyRecord]) -> Metrics:
        """Held-out metrics on measured records (reference records are skipped). Anchored records are compared on
        this predictor's scale (their ratio to BERT-base x `reference_ms`), i.e. as speedups."""
        points = [r for r in records if not r.is_reference]
        if not points:
            raise UserError("no measured archs to evaluate on")
        true = [r.ratio * self.reference_ms if r.ratio is not None else r.median_ms for r in points]
        return Metrics.of(true, self.predict_many([r.arch for r in points]))

    # ----- files ----------------------------------------------------------------------------------------------
    def _meta(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        model_meta, arrays = self.model.state()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind, "reference_ms": self.reference_ms,
                "device": self.device, "space": self.space, "model": model_meta,
                "report": self.report.to_dict() if self.report else None}
        return meta, arrays

    def save(self, path: str | Path) -> Path:
        """Write JSON, or safetensors (arrays as tensors, the rest as metadata) for a ``.safetensors`` path."""
        path = Path(path)
        meta, arrays = self._meta()
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            with atomic_path(path) as tmp:
                save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(tmp),
                          metadata={FORMAT: json.dumps(meta)})
        else:
            atomic_write_json(path, {**meta, "arrays": {k: np.asarray(v).tolist() for k, v in arrays.items()}})
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"latency predictor {path} is a folder; give the predictor file (.json or .safetensors)"
                            if path.is_dir() else
                            f"latency predictor {path} does not exist; fit one with autotinybert latency fit")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                raw = (handle.metadata() or {}).get(FORMAT)
                if raw is None:
                    raise UserError(f"{path} is a safetensors file but not a latency predictor")
                meta = json.loads(raw)
                arrays = {k: handle.get_tensor(k) for k in handle.keys()}
        else:
            try:
                meta = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise UserError(f"{path} is not a JSON latency predictor ({err})") from None
            if not isinstance(meta, dict):
                raise UserError(f"{path} is not a latency predictor file")
            arrays = {k: np.asarray(v, dtype=np.float64) for k, v in meta.pop("arrays", {}).items()}
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} is not a latency predictor file (format {meta.get('format')!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise UserError(f"{path} has predictor format version {meta.get('version')}; this version reads "
                            f"{FORMAT_VERSION}: refit it with autotinybert latency fit")
        if meta.get("kind") not in MODEL_KINDS:
            raise UserError(f"{path}: unknown predictor kind {meta.get('kind')!r}")
        model = MODEL_KINDS[meta["kind"]].from_state(meta["model"], arrays)
        report = FitReport.from_dict(meta["report"]) if meta.get("report") else None
        predictor = cls(model, meta["reference_ms"], meta["device"], report)
        predictor.space = meta.get("space") if isinstance(meta.get("space"), dict) else None
        return predictor

    def describe(self) -> str:
        d = self.device
        head = (f"{self.kind} latency predictor: BERT-base = {self.reference_ms:.2f} ms on {d.get('cpu')} "
                f"({d.get('backend')}, {d.get('device')}, {d.get('threads')} thread(s), batch {d.get('batch')}, "
                f"{d.get('seq_len')} tokens)")
        return head + ("\n" + self.report.describe() if self.report else "")


def _split(records: Sequence[LatencyRecord] | LatencyDataset, reference_ms: float | None,
           device: dict[str, Any] | None) -> tuple[list[LatencyRecord], float, dict[str, Any]]:
    if isinstance(records, LatencyDataset):
        points, references = list(records.records), list(records.references)
        device = device or records.device
    else:
        points = [r for r in records if not r.is_reference]
        references = [r for r in records if r.is_reference]
    settings = {r.settings for r in points + references}
    if len(settings) > 1:
        raise UserError(f"the records mix measurement settings {sorted(settings)} (backend, device, threads, "
                        "batch, seq_len); fit one predictor per setting")
    if reference_ms is None:
        if not references:
            raise UserError("no BERT-base reference among the records and no reference_ms given; measure with "
                            "autotinybert latency measure (it times the reference) or pass reference_ms")
        reference_ms = float(np.median([r.median_ms for r in references]))
    if device is None:
        first = (points + references)[0] if points + references else None
        device = device_record(*first.settings) if first else device_record()
    return points, reference_ms, device


def _fit_kind(kind: str, archs: list[Arch], y: np.ndarray, batch: int, seq_len: int, seed: int,
              mlp_options: dict[str, Any]):
    if kind == "analytic":
        return AnalyticModel.fit(archs, y, batch=batch, seq_len=seq_len)
    if kind == "boosted":
        return BoostedModel.fit(archs, y, batch=batch, seq_len=seq_len, seed=seed)
    return MLPModel.fit(archs, y, seed=seed, **mlp_options)


def cross_validate(kind: str, archs: list[Arch], y: np.ndarray, *, batch: int, seq_len: int, folds: int = 5,
                   seed: int = 0, mlp_options: dict[str, Any] | None = None) -> tuple[Metrics, np.ndarray]:
    """Out-of-fold predictions of one model kind (seeded shuffled folds) and their metrics."""
    order = np.random.default_rng(seed).permutation(len(archs))
    pred = np.empty(len(archs))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = _fit_kind(kind, [archs[i] for i in train], y[train], batch, seq_len, seed, mlp_options or {})
        pred[fold] = model.predict([archs[i] for i in fold])
    return Metrics.of(y, pred), pred


def fit_predictor(records: Sequence[LatencyRecord] | LatencyDataset, *, kind: str = "auto", folds: int = 5,
                  seed: int = 0, reference_ms: float | None = None, device: dict[str, Any] | None = None,
                  mlp_options: dict[str, Any] | None = None) -> LatencyPredictor:
    """Fit a predictor on measured records; ``kind`` is "auto" (best by cross-validated MAPE), "analytic", "mlp" or
    "boosted".

    The returned predictor's ``report`` (`FitReport`) holds every candidate's out-of-fold RMSE/MAPE/worst/tau.
    The reference latency comes from the BERT-base records (or `reference_ms`); the device record from the
    dataset (or `device`).
    """
    if kind not in ("auto", *MODEL_KINDS):
        raise UserError(f"unknown predictor kind {kind!r}; choose auto, {', '.join(MODEL_KINDS)}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise UserError(f"folds must be an integer >= 2, got {folds!r}")
    points, reference_ms, device = _split(records, reference_ms, device)
    need = max(2 * AnalyticModel.min_points(), folds)
    if len(points) < need:
        raise UserError(f"fitting a latency predictor with {folds}-fold cross-validation needs at least {need} "
                        f"measured archs, got {len(points)}; measure more (autotinybert latency measure n=...)")
    archs = [r.arch for r in points]
    # anchored records carry their ratio to BERT-base: put them all on this reference's scale (records from several
    # campaigns or pipeline chunks were normalised by their own BERT-base, which drifts with the machine)
    y = np.array([r.ratio * reference_ms if r.ratio is not None else r.median_ms for r in points], dtype=np.float64)
    batch, seq_len = points[0].batch, points[0].seq_len
    kinds = list(MODEL_KINDS) if kind == "auto" else [kind]
    cv = {k: cross_validate(k, archs, y, batch=batch, seq_len=seq_len, folds=folds, seed=seed,
                            mlp_options=mlp_options)[0] for k in kinds}
    best = min(m.mape for m in cv.values())
    simplest_first = [k for k in ("analytic", "boosted", "mlp") if k in cv]  # a tie goes to the simpler model
    chosen = next(k for k in simplest_first if cv[k].mape <= best * (1 + 1e-3) + 1e-9)
    model = _fit_kind(chosen, archs, y, batch, seq_len, seed, mlp_options or {})
    analytic = model if chosen == "analytic" else (
        AnalyticModel.fit(archs, y, batch=batch, seq_len=seq_len) if "analytic" in kinds else None)
    report = FitReport(chosen=chosen, n_points=len(points), folds=folds, cross_validation=cv,
                       coefficients=analytic.coefficients() if analytic else None,
                       rank=analytic.rank if analytic else None)
    predictor = LatencyPredictor(model, reference_ms, device, report)
    spaces = records.spaces if isinstance(records, LatencyDataset) else {}
    if len(spaces) == 1 and next(iter(spaces.values())):  # one recorded space: searches are checked against it
        predictor.space = next(iter(spaces.values()))
    return predictor
