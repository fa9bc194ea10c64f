"""`run_pipeline(config)`: tokenize -> latency -> predictor -> supernet -> search (one per target) -> extract ->
further-train -> finetune -> report, each stage in ``RUN_DIR/<stage>/`` under `StageRunner` (skip / resume /
invalidate downstream). The conventional-rule baseline of each target is extracted, trained and evaluated the
same way as the searched model, so the report compares them at equal latency."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..io import atomic_write_json
from .config import PipelineConfig
from .ranks import Ranks
from .stages import RunFolderBusyError, RunLock, StageRunner

RESOLVED_CONFIG = "pipeline.json"
REPORT_VERSION = 2  # bump when the report's content changes, so finished runs rebuild it


@dataclass
class ModelEntry:
    """One model the pipeline builds for a target: the searched winner or the conventional baseline."""

    name: str            # "searched-4x" / "fast-4x" / "conventional-4x"
    kind: str            # "searched" | "fast" | "conventional"
    speedup_target: float
    arch: str
    extracted_dir: str
    predicted_ms: float
    measured_ms: float | None = None
    measured_speedup: float | None = None
    trained_dir: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # task -> best dev main score (fraction)
    score: float | None = None                               # GLUE mean (or mean over the tasks run)
    finetuned_dirs: dict[str, str] = field(default_factory=dict)
    same_as: str | None = None  # another entry with the same arch and the same initial weights: its results are reused


@dataclass
class PipelineResult:
    run_dir: Path
    models: list[ModelEntry]
    reference_ms: float
    report: Path
    stages: dict[str, dict[str, Any]]  # stage -> {"skipped", "resumed", "wall_s"}
    wall_s: float


def target_tag(speedup: float) -> str:
    return f"{speedup:g}x"


def conventional_candidates(space, head_size: int) -> list:
    """BERT-rule archs inside `space`: ffn = 4 hidden, qkv = hidden, heads = hidden / head_size. In a space with a
    fixed head count (the KD spaces, `attention: dims`) the heads stay fixed, as in the paper's KD baselines
    (e.g. 4-312-1200-12-312)."""
    from ..arch import Arch

    out = []
    for layers in range(space.layers.low, space.layers.high + 1, space.layers.step):
        for hidden in range(space.hidden.low, space.hidden.high + 1, space.hidden.step):
            if space.attention == "dims":
                if hidden % space.heads.high:
                    continue
                arch = Arch(layers, hidden, 4 * hidden, space.heads.high, hidden)
            elif hidden % head_size:
                continue
            else:
                arch = Arch.conventional(layers, hidden, head_size=head_size)
            if space.contains(arch):
                out.append(arch)
    return out


def run_pipeline(config: PipelineConfig | dict | str | Path, overrides: list[str] | tuple[str, ...] = (),
                 log: Callable[[str], None] = print) -> PipelineResult:
    """Run (or continue) the whole pipeline; returns the models with their latencies and scores."""
    cfg = config if isinstance(config, PipelineConfig) else PipelineConfig.load(config, overrides)
    ranks = Ranks.from_environment()
    lock = RunLock(cfg.out)
    try:
        busy = None
        if ranks.is_main:  # rank 0 owns the run folder
            try:
                lock.acquire()
            except RunFolderBusyError as err:
                busy = str(err)
        busy = ranks.share(busy)
        if busy:
            raise RunFolderBusyError(busy)
        return _run(cfg, ranks, log)
    finally:
        lock.release()
        ranks.close()


def _run(cfg: PipelineConfig, ranks: Ranks, log: Callable[[str], None]) -> PipelineResult:
    started = time.time()
    run_dir = cfg.out
    runner = StageRunner(run_dir, log=log, ranks=ranks)
    log = runner.log  # silent on ranks other than 0
    if ranks.is_main:
        atomic_write_json(run_dir / RESOLVED_CONFIG, cfg.raw)
    data = cfg.section("data")
    cache_dir = data["cache_dir"] or str(run_dir / "cache")
    progress = bool(cfg.raw["progress"])
    seed = cfg.seed

    # -- tokenize --------------------------------------------------------------------------------------------
    tok_cfg = {k: data[k] for k in ("corpus", "tokenizer", "tokenizer_vocab_size", "max_seq_length",
                                     "val_fraction", "val_max_sequences")}

    def tokenize(stage: Path, resume: bool) -> dict[str, Any]:
        from ..data import prepare_corpus

        prepared = prepare_corpus(data["corpus"], data["tokenizer"], max_seq_length=data["max_seq_length"],
                                  cache_dir=cache_dir, val_fraction=data["val_fraction"],
                                  val_max_sequences=data["val_max_sequences"],
                                  tokenizer_vocab_size=data["tokenizer_vocab_size"], progress=progress)
        atomic_write_json(stage / "stats.json", prepared.stats)
        return {"tokenizer_dir": str(prepared.tokenizer_dir), "corpus_cache": str(prepared.cache_dir),
                "train_sequences": int(len(prepared.train)), "validation_sequences": int(len(prepared.validation))}

    tok = runner.run("tokenize", tok_cfg, tokenize).outputs
    train_common = {"corpus": data["corpus"], "tokenizer": tok["tokenizer_dir"], "cache_dir": cache_dir,
                    "max_seq_length": data["max_seq_length"], "val_fraction": data["val_fraction"],
                    "val_max_sequences": data["val_max_sequences"], "seed": seed, "progress": progress}

    sn_cfg = cfg.section("supernet")

    # -- latency: sampled archs + conventional candidates + BERT-base, one interleaved campaign ---------------
    lat_cfg = cfg.section("latency")
    space_spec = sn_cfg.get("space", "cpu-mlm")
    lat_stage_cfg = {**lat_cfg, "space": space_spec, "seed": seed}

    def latency(stage: Path, resume: bool) -> dict[str, Any]:
        from ..latency import measure_latency
        from ..latency.dataset import sample_archs
        from ..space import SearchSpace

        space = SearchSpace.load(space_spec)
        sampled = sample_archs(space, min(lat_cfg["archs"], space.size()), seed=seed)
        rule = set(conventional_candidates(space, lat_cfg["baseline_head_size"]))
        candidates = sorted(rule - set(sampled), key=str)
        if not rule:
            raise UserError(f"the search space holds no conventional-rule arch (ffn = 4 hidden, heads = hidden / "
                            f"{lat_cfg['baseline_head_size']}); widen it or set latency.baseline_head_size")
        log(f"[latency] timing {len(sampled)} sampled + {len(candidates)} conventional archs + BERT-base")
        archs = sampled + candidates
        chunk = lat_cfg["chunk"]  # models are built before timing: bound the memory by timing in chunks
        lines, references = [], []
        for start in range(0, len(archs), chunk):
            part = archs[start:start + chunk]
            records = measure_latency(part, backend=lat_cfg["backend"], threads=lat_cfg["threads"],
                                      batch=lat_cfg["batch"], seq_len=lat_cfg["seq_len"], device=lat_cfg["device"],
                                      warmup=lat_cfg["warmup"], repeats=lat_cfg["repeats"], reference=True,
                                      seed=seed, clock=lat_cfg["clock"])
            for i, rec in enumerate(records):
                role = "reference" if rec.is_reference else "conventional" if rec.arch in rule else "sampled"
                lines.append(json.dumps({**rec.to_dict(), "role": role}))
            references.append(records[-1].median_ms)
        (stage / "latency.jsonl").write_text("\n".join(lines) + "\n")
        reference_ms = float(sorted(references)[len(references) // 2])  # median over the chunks' BERT-base runs
        return {"records": str(stage / "latency.jsonl"), "reference_ms": reference_ms}

    lat = runner.run("latency", lat_stage_cfg, latency).outputs
    lat_rows = [json.loads(line) for line in Path(lat["records"]).read_text().splitlines() if line.strip()]

    # -- predictor -------------------------------------------------------------------------------------------
    pred_cfg = cfg.section("predictor")

    def predictor(stage: Path, resume: bool) -> dict[str, Any]:
        from ..arch import Arch
        from ..latency import fit_predictor
        from ..latency.measure import LatencyRecord

        records = [LatencyRecord(arch=Arch.parse(r["arch"]), median_ms=r["median_ms"], iqr_ms=r["iqr_ms"],
                                 repeats=r["repeats"], backend=r["backend"], device=r["device"],
                                 threads=r["threads"], batch=r["batch"], seq_len=r["seq_len"], clock=r["clock"],
                                 is_reference=r["is_reference"], samples_ms=r.get("samples_ms", []))
                   for r in lat_rows]
        fitted = fit_predictor(records, kind=pred_cfg["kind"], folds=pred_cfg["folds"], seed=seed)
        fitted.save(stage / "predictor.json")
        fit_rows = [{"arch": r["arch"], "role": r["role"], "measured_ms": r["median_ms"],
                     "predicted_ms": fitted.predict(r["arch"])} for r in lat_rows if not r["is_reference"]]
        atomic_write_json(stage / "fit.json", {"report": fitted.report.to_dict() if fitted.report else None,
                                               "points": fit_rows})
        return {"predictor": str(stage / "predictor.json"), "reference_ms": fitted.reference_ms,
                "chosen": fitted.report.chosen if fitted.report else pred_cfg["kind"]}

    pred = runner.run("predictor", pred_cfg, predictor, upstream=("latency",)).outputs

    # -- the targets, checked against what the space reaches on this machine before any training ----------------
    search_cfg = cfg.section("search")
    speedups = [float(s) for s in search_cfg.pop("speedups")]
    with_fast = search_cfg.pop("fast")
    _check_targets(speedups, pred["predictor"], space_spec, search_cfg.get("window", (0.85, 1.1)))

    # -- supernet (after latency + predictor, so an unreachable target fails before hours of training) ---------
    def supernet(stage: Path, resume: bool) -> dict[str, Any]:
        from ..train import train_supernet

        out = stage / "supernet"
        can_resume = resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
        path = train_supernet({**sn_cfg, **train_common, "out": str(out), "resume": bool(can_resume),
                               "overwrite": not can_resume})
        return {"supernet": str(path)}

    sn = runner.run("supernet", sn_cfg, supernet, upstream=("tokenize",), distributed=True).outputs
    supernet_dir = sn["supernet"]

    # -- search: one per target, sharing the supernet and the predictor ---------------------------------------
    searches: dict[float, dict[str, Any]] = {}
    fast_searches: dict[float, dict[str, Any]] = {}
    search_stages: list[str] = []
    # per target: the configured (evolved) search, then, with search.fast, the paper's fast rule
    methods = [("search", search_cfg["method"], searches)] + ([("fast", "fast", fast_searches)] if with_fast else [])
    for speedup in speedups:
        for prefix, method, found in methods:
            name = f"{prefix}-{target_tag(speedup)}"
            stage_cfg = {**search_cfg, "method": method, "speedup": speedup}
            found[speedup] = runner.run(name, stage_cfg, partial(_search_stage, stage_cfg, supernet_dir,
                                                                 pred["predictor"], seed, data["downstream"],
                                                                 progress),
                                        upstream=("supernet", "predictor"), distributed=True).outputs
            search_stages.append(name)

    # -- extract: top-1 per target (+ the fast-rule pick) + the conventional baseline closest in latency ------
    extract_cfg = {"speedups": speedups, "fast": with_fast, "head_size": lat_cfg["baseline_head_size"],
                   "seed": seed}

    def extract_stage(stage: Path, resume: bool) -> dict[str, Any]:
        return {"models": _extract_models(stage, supernet_dir, speedups, searches, fast_searches, lat_rows,
                                          lat["reference_ms"], pred["predictor"], lat_cfg, seed, log)}

    ext = runner.run("extract", extract_cfg, extract_stage,
                     upstream=("supernet", "latency", "predictor", *search_stages)).outputs
    models = [ModelEntry(**m) for m in ext["models"]]

    # -- further-train: same budget for searched and conventional ------------------------------------------
    ft_cfg = cfg.section("further_train")

    def further_train(stage: Path, resume: bool) -> dict[str, Any]:
        from ..train import train_model

        trained = {}
        for m in models:
            if m.same_as:
                continue
            out = stage / m.name
            if (out / "TRAINED.json").is_file():
                trained[m.name] = str(out)
                continue
            can_resume = resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
            log(f"[further-train] {m.name} ({m.arch})")
            path = train_model({**ft_cfg, **train_common, "model": m.extracted_dir, "out": str(out),
                                "resume": bool(can_resume), "overwrite": not can_resume})
            if ranks.is_main:
                atomic_write_json(out / "TRAINED.json", {"model": m.name})
            trained[m.name] = str(path)
        return {"trained": trained}

    trained = runner.run("further-train", ft_cfg, further_train, upstream=("tokenize", "extract"),
                         distributed=True).outputs["trained"]
    for m in models:
        m.trained_dir = trained[m.same_as or m.name]

    # -- finetune -------------------------------------------------------------------------------------------
    fine_cfg = cfg.section("finetune")

    def finetune(stage: Path, resume: bool) -> dict[str, Any]:
        from ..downstream import evaluate_suite
        from ..downstream.tasks import parse_tasks

        chosen = {spec.name for spec in parse_tasks(fine_cfg["tasks"])}
        selected_task_configs = {k: v for k, v in fine_cfg["task_configs"].items() if k.lower() in chosen}

        results = {}
        for m in models:
            if m.same_as:
                continue
            log(f"[finetune] {m.name} on {', '.join(map(str, fine_cfg['tasks']))}")
            suite = evaluate_suite(m.trained_dir, fine_cfg["tasks"], data["downstream"], stage / m.name,
                                   config={**fine_cfg["config"], "seed": fine_cfg["config"].get("seed", seed),
                                           "progress": progress},
                                   task_configs=selected_task_configs, resume=True)
            results[m.name] = {
                "scores": {t: s.best for t, s in suite.tasks.items()},
                "score": suite.score if suite.score is not None else suite.avg,
                "finetuned_dirs": {t: str(stage / m.name / t / "model") for t in suite.tasks}}
        return {"results": results}

    fine = runner.run("finetune", fine_cfg, finetune, upstream=("further-train",)).outputs["results"]
    for m in models:
        done = fine[m.same_as or m.name]
        m.scores, m.score, m.finetuned_dirs = done["scores"], done["score"], done["finetuned_dirs"]

    # -- report: reads every stage's files (`autotinybert report RUN_DIR` rebuilds it at any time) --------------
    def report_stage(stage: Path, resume: bool) -> dict[str, Any]:
        from .report import write_report

        return {"report": str(write_report(run_dir))}

    report = Path(runner.run("report", {"version": REPORT_VERSION}, report_stage,
                             upstream=("predictor", *search_stages, "extract", "finetune")).outputs["report"])
    stages = {name: {"skipped": r.skipped, "resumed": r.resumed, "wall_s": round(r.wall_s, 2)}
              for name, r in runner.results.items()}
    result = PipelineResult(run_dir, models, lat["reference_ms"], report, stages, time.time() - started)
    if ranks.is_main:
        atomic_write_json(run_dir / "result.json", {
            "models": [m.__dict__ for m in models], "reference_ms": lat["reference_ms"], "stages": stages,
            "wall_s": round(result.wall_s, 2)})
    return result


def _check_targets(speedups: list[float], predictor_file: str, space_spec, window) -> None:
    """Refuse targets whose admissible window misses every arch of the space (by the predictor), before any
    search starts."""
    from ..latency import LatencyPredictor
    from ..space import SearchSpace

    p = LatencyPredictor.load(predictor_file)
    space = SearchSpace.load(space_spec)
    low, high = window
    min_ms, max_ms = p.predict(space.min_arch), p.predict(space.max_arch)
    bad = [s for s in speedups if not (low * p.reference_ms / s <= max_ms and high * p.reference_ms / s >= min_ms)]
    if bad:
        raise UserError(f"search.speedups {bad} are outside what the space reaches on this machine (predicted "
                        f"{p.reference_ms / max_ms:.1f}x for its largest arch to {p.reference_ms / min_ms:.1f}x for "
                        f"its smallest, window {list(window)}); pick targets inside that range")


def _search_stage(search_cfg: dict[str, Any], supernet_dir: str, predictor: str, seed: int, data_dir: str | None,
                  progress: bool, stage: Path, resume: bool) -> dict[str, Any]:
    """One search for one target (search_cfg holds its method and speedup); the stage keeps its best arch."""
    from ..search import run_search

    result = run_search({**search_cfg, "supernet": supernet_dir, "predictor": predictor, "seed": seed,
                         "data": data_dir, "out": str(stage / "search"), "resume": resume, "overwrite": not resume,
                         "progress": progress})
    best = result.best[0]
    return {"arch": best.arch, "predicted_ms": best.latency_ms, "predicted_speedup": best.speedup,
            "fitness": best.fitness, "scores": best.scores, "out": str(stage / "search"),
            "generations": result.generations, "evaluated": len(result.candidates)}


def _extract_models(stage: Path, supernet_dir: str, speedups: list[float], searches: dict[float, dict],
                    fast_searches: dict[float, dict], lat_rows: list[dict], reference_ms: float,
                    predictor_file: str, lat_cfg: dict, seed: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per target: the searched winner and the fast-rule pick (extracted from the supernet) and the conventional
    baseline (fresh weights), then one interleaved latency run of all of them with BERT-base."""
    import torch

    from ..arch import Arch
    from ..extract import extract, save_extracted
    from ..latency import LatencyPredictor, measure_latency
    from ..modeling import AutoTinyBertForMaskedLM
    from ..supernet import SuperBertForMaskedLM

    predictor = LatencyPredictor.load(predictor_file)
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_dir)
    conventional = [r for r in lat_rows if r["role"] == "conventional"]
    entries: list[ModelEntry] = []
    for speedup in speedups:
        tag = target_tag(speedup)
        target_ms = reference_ms / speedup
        searched = Arch.parse(searches[speedup]["arch"])
        # measured in the same campaign as BERT-base: the closest to the target in measured latency
        baseline = min(conventional, key=lambda r: abs(r["median_ms"] - target_ms))
        log(f"[extract] {tag}: searched {searched}, conventional {baseline['arch']} "
            f"(measured {baseline['median_ms']:.2f} ms vs target {target_ms:.2f} ms)")
        picks = [("searched", searched)]
        if speedup in fast_searches:
            picks.append(("fast", Arch.parse(fast_searches[speedup]["arch"])))
            log(f"[extract] {tag}: fast rule {picks[-1][1]}")
        for kind, arch in picks:
            twin = next((e for e in entries if e.kind != "conventional" and e.arch == str(arch)
                         and e.speedup_target == speedup), None)
            if twin is not None:  # the fast rule picked the searched arch: same weights, same results
                entries.append(ModelEntry(f"{kind}-{tag}", kind, speedup, str(arch), twin.extracted_dir,
                                          twin.predicted_ms, same_as=twin.name))
                continue
            out = save_extracted(extract(supernet, arch, head="mlm"), stage / f"{kind}-{tag}",
                                 tokenizer_dir=supernet_dir, overwrite=True)
            entries.append(ModelEntry(f"{kind}-{tag}", kind, speedup, str(arch), str(out), predictor.predict(arch)))
        # the baseline starts from scratch: a fresh model of the same family, seeded
        template = extract(supernet, Arch.parse(baseline["arch"]), head="mlm")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scratch = AutoTinyBertForMaskedLM(template.config)
        conv_dir = save_extracted(scratch, stage / f"conventional-{tag}", tokenizer_dir=supernet_dir,
                                  overwrite=True)
        entries.append(ModelEntry(f"conventional-{tag}", "conventional", speedup, baseline["arch"], str(conv_dir),
                                  predictor.predict(baseline["arch"])))
    # measured latency of every chosen arch, in one interleaved run with BERT-base
    archs = sorted({e.arch for e in entries})
    records = measure_latency(archs, backend=lat_cfg["backend"], threads=lat_cfg["threads"], batch=lat_cfg["batch"],
                              seq_len=lat_cfg["seq_len"], device=lat_cfg["device"], warmup=lat_cfg["warmup"],
                              repeats=lat_cfg["repeats"], reference=True, seed=seed, clock=lat_cfg["clock"])
    ref = records[-1].median_ms
    measured = {str(r.arch): r.median_ms for r in records[:-1]}
    for e in entries:
        e.measured_ms = measured[e.arch]
        e.measured_speedup = ref / measured[e.arch]
    rows = [e.__dict__ for e in entries]
    atomic_write_json(stage / "models.json", {"reference_ms": ref, "models": rows})
    return rows
