"""The pipeline's stage functions: ``stage(inputs, stage_dir, resume) -> outputs``, each reading only its typed
inputs (`stage_types`) and writing only inside its stage folder. `plan` builds their inputs; `run` runs them."""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import atomic_write_json
from .stage_types import (ExtractInputs, FinetuneInputs, FurtherTrainInputs, LatencyInputs, LatencyOutputs,
                          ModelEntry, ModelsOutputs, PredictorInputs, PredictorOutputs, ReportInputs, ReportOutputs,
                          SearchInputs, SearchOutputs, SupernetInputs, SupernetOutputs, TokenizeInputs,
                          TokenizeOutputs)

# Where the stages' progress lines go: `run_pipeline` sets its `log` (silent on ranks other than 0).
STAGE_LOG: ContextVar[Callable[[str], None]] = ContextVar("stage_log", default=print)


def log(line: str) -> None:
    STAGE_LOG.get()(line)


def target_tag(speedup: float) -> str:
    return f"{speedup:g}x"


def is_main_process() -> bool:
    """Rank 0 under torchrun (the pipeline's process group is up by then), or a plain run."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


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


def read_latency_rows(campaign: LatencyOutputs) -> list[dict]:
    return [json.loads(line) for line in Path(campaign.records).read_text().splitlines() if line.strip()]


def _can_resume(out: Path, resume: bool) -> bool:
    checkpoints = out / "checkpoints"
    return resume and checkpoints.is_dir() and any(checkpoints.iterdir())


# ------------------------------------------------------------------------------------------------------ stages
def tokenize(inputs: TokenizeInputs, stage_dir: Path, resume: bool) -> TokenizeOutputs:
    from ..data import prepare_corpus

    d = inputs.data
    prepared = prepare_corpus(d.corpus, d.tokenizer, max_seq_length=d.max_seq_length, cache_dir=d.cache_dir,
                              val_fraction=d.val_fraction, val_max_sequences=d.val_max_sequences,
                              tokenizer_vocab_size=d.tokenizer_vocab_size, progress=inputs.progress)
    atomic_write_json(stage_dir / "stats.json", prepared.stats)
    return TokenizeOutputs(tokenizer_dir=str(prepared.tokenizer_dir), corpus_cache=str(prepared.cache_dir),
                           train_sequences=len(prepared.train), validation_sequences=len(prepared.validation))


def latency(inputs: LatencyInputs, stage_dir: Path, resume: bool) -> LatencyOutputs:
    """Sampled archs + the conventional candidates + BERT-base, in one interleaved campaign."""
    from ..latency import measure_latency
    from ..latency.dataset import sample_archs
    from ..space import SearchSpace

    lat = inputs.latency
    space = SearchSpace.load(inputs.space)
    sampled = sample_archs(space, min(lat.archs, space.size()), seed=inputs.seed)
    rule = set(conventional_candidates(space, lat.baseline_head_size))
    candidates = sorted(rule - set(sampled), key=str)
    if not rule:
        raise UserError(f"the search space holds no conventional-rule arch (ffn = 4 hidden, heads = hidden / "
                        f"{lat.baseline_head_size}); widen it or set latency.baseline_head_size")
    log(f"[latency] timing {len(sampled)} sampled + {len(candidates)} conventional archs + BERT-base")
    archs = sampled + candidates
    lines, references = [], []
    for start in range(0, len(archs), lat.chunk):  # models are built before timing: bound the memory by chunks
        records = measure_latency(archs[start:start + lat.chunk], **lat.timing_kwargs(), reference=True,
                                  seed=inputs.seed)
        for rec in records:
            role = "reference" if rec.is_reference else "conventional" if rec.arch in rule else "sampled"
            lines.append(json.dumps({**rec.to_dict(), "role": role}))
        references.append(records[-1].median_ms)
    (stage_dir / "latency.jsonl").write_text("\n".join(lines) + "\n")
    reference_ms = float(sorted(references)[len(references) // 2])  # median over the chunks' BERT-base runs
    return LatencyOutputs(records=str(stage_dir / "latency.jsonl"), reference_ms=reference_ms)


def predictor(inputs: PredictorInputs, stage_dir: Path, resume: bool) -> PredictorOutputs:
    from ..latency import fit_predictor
    from ..latency.measure import LatencyRecord

    rows = read_latency_rows(inputs.latency)
    fitted = fit_predictor([LatencyRecord.from_dict(r) for r in rows], kind=inputs.predictor.kind,
                           folds=inputs.predictor.folds, seed=inputs.seed)
    fitted.save(stage_dir / "predictor.json")
    points = [{"arch": r["arch"], "role": r["role"], "measured_ms": r["median_ms"],
               "predicted_ms": fitted.predict(r["arch"])} for r in rows if not r["is_reference"]]
    atomic_write_json(stage_dir / "fit.json", {"report": fitted.report.to_dict() if fitted.report else None,
                                               "points": points})
    return PredictorOutputs(predictor=str(stage_dir / "predictor.json"), reference_ms=fitted.reference_ms,
                            chosen=fitted.report.chosen if fitted.report else inputs.predictor.kind)


def supernet(inputs: SupernetInputs, stage_dir: Path, resume: bool) -> SupernetOutputs:
    from ..train import train_supernet
    from ..train.config import TrainSupernetConfig

    out = stage_dir / "supernet"
    can_resume = _can_resume(out, resume)
    path = train_supernet(TrainSupernetConfig.from_dict({
        **inputs.supernet.to_dict(), **inputs.data.to_dict(), "tokenizer": inputs.tokenized.tokenizer_dir,
        "seed": inputs.seed, "progress": inputs.progress, "out": str(out), "resume": can_resume,
        "overwrite": not can_resume}))
    return SupernetOutputs(supernet=str(path))


def search(inputs: SearchInputs, stage_dir: Path, resume: bool) -> SearchOutputs:
    """One search for one target; the stage keeps its best arch."""
    from ..search import run_search
    from ..search.config import SearchConfig

    out = stage_dir / "search"
    result = run_search(SearchConfig.from_dict({
        **inputs.search.to_dict(), "speedup": inputs.speedup, "plot": inputs.plot, "data": inputs.downstream,
        "supernet": inputs.supernet.supernet, "predictor": inputs.predictor.predictor, "seed": inputs.seed,
        "progress": inputs.progress, "out": str(out), "resume": resume, "overwrite": not resume}))
    best = result.best[0]
    return SearchOutputs(arch=best.arch, predicted_ms=best.latency_ms, predicted_speedup=best.speedup,
                         fitness=best.fitness, scores=best.scores, out=str(out), generations=result.generations,
                         evaluated=len(result.candidates))


def extract(inputs: ExtractInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    """Per target: the searched winner and the fast-rule pick (extracted from the supernet) and the conventional
    baseline closest to the target in measured latency (fresh weights), then one interleaved latency run of all of
    them with BERT-base."""
    import torch

    from ..arch import Arch
    from ..extract import extract as extract_arch
    from ..extract import save_extracted
    from ..latency import LatencyPredictor, measure_latency
    from ..modeling import AutoTinyBertForMaskedLM
    from ..supernet import SuperBertForMaskedLM

    supernet_dir = inputs.supernet.supernet
    latency_model = LatencyPredictor.load(inputs.predictor.predictor)
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_dir)
    conventional = [r for r in read_latency_rows(inputs.campaign) if r["role"] == "conventional"]
    entries: list[ModelEntry] = []

    def save(model, name: str) -> str:
        return str(save_extracted(model, stage_dir / name, tokenizer_dir=supernet_dir, overwrite=True))

    for target in inputs.targets:
        speedup, tag = target.speedup, target_tag(target.speedup)
        target_ms = inputs.campaign.reference_ms / speedup
        # measured in the same campaign as BERT-base: the closest to the target in measured latency
        baseline = min(conventional, key=lambda r: abs(r["median_ms"] - target_ms))
        log(f"[extract] {tag}: searched {target.searched.arch}, conventional {baseline['arch']} "
            f"(measured {baseline['median_ms']:.2f} ms vs target {target_ms:.2f} ms)")
        picks = [("searched", target.searched.arch)]
        if target.fast is not None:
            picks.append(("fast", target.fast.arch))
            log(f"[extract] {tag}: fast rule {target.fast.arch}")
        for kind, arch in picks:
            name = f"{kind}-{tag}"
            twin = next((e for e in entries if e.kind != "conventional" and e.arch == arch
                         and e.speedup_target == speedup), None)
            if twin is not None:  # the fast rule picked the searched arch: same weights, same results
                entries.append(ModelEntry(name=name, kind=kind, speedup_target=speedup, arch=arch,
                                          extracted_dir=twin.extracted_dir, predicted_ms=twin.predicted_ms,
                                          same_as=twin.name))
                continue
            entries.append(ModelEntry(name=name, kind=kind, speedup_target=speedup, arch=arch,
                                      extracted_dir=save(extract_arch(supernet, Arch.parse(arch), head="mlm"), name),
                                      predicted_ms=latency_model.predict(arch)))
        # the baseline starts from scratch: a fresh model of the same family, seeded
        template = extract_arch(supernet, Arch.parse(baseline["arch"]), head="mlm")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(inputs.seed)
            scratch = AutoTinyBertForMaskedLM(template.config)
        entries.append(ModelEntry(name=f"conventional-{tag}", kind="conventional", speedup_target=speedup,
                                  arch=baseline["arch"], extracted_dir=save(scratch, f"conventional-{tag}"),
                                  predicted_ms=latency_model.predict(baseline["arch"])))
    # measured latency of every chosen arch, in one interleaved run with BERT-base
    records = measure_latency(sorted({e.arch for e in entries}), **inputs.latency.timing_kwargs(), reference=True,
                              seed=inputs.seed)
    ref = records[-1].median_ms
    measured = {str(r.arch): r.median_ms for r in records[:-1]}
    models = [e.replace(measured_ms=measured[e.arch], measured_speedup=ref / measured[e.arch]) for e in entries]
    atomic_write_json(stage_dir / "models.json", {"reference_ms": ref, "models": [m.to_dict() for m in models]})
    return ModelsOutputs(models=models)


def further_train(inputs: FurtherTrainInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    """The same further-training budget for every model (a `same_as` twin shares its twin's)."""
    from ..train import train_model
    from ..train.config import TrainModelConfig

    trained: dict[str, str] = {}
    for m in inputs.models:
        if m.same_as:
            continue
        out = stage_dir / m.name
        if (out / "TRAINED.json").is_file():
            trained[m.name] = str(out)
            continue
        can_resume = _can_resume(out, resume)
        log(f"[further-train] {m.name} ({m.arch})")
        path = train_model(TrainModelConfig.from_dict({
            **inputs.further_train.to_dict(), **inputs.data.to_dict(), "tokenizer": inputs.tokenized.tokenizer_dir,
            "seed": inputs.seed, "progress": inputs.progress, "model": m.extracted_dir, "out": str(out),
            "resume": can_resume, "overwrite": not can_resume}))
        if is_main_process():
            atomic_write_json(out / "TRAINED.json", {"model": m.name})
        trained[m.name] = str(path)
    return ModelsOutputs(models=[m.replace(trained_dir=trained[m.same_as or m.name]) for m in inputs.models])


def finetune(inputs: FinetuneInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    from ..downstream import evaluate_suite

    results: dict[str, dict] = {}
    for m in inputs.models:
        if m.same_as:
            continue
        log(f"[finetune] {m.name} on {', '.join(inputs.tasks)}")
        suite = evaluate_suite(m.trained_dir, inputs.tasks, inputs.downstream, stage_dir / m.name,
                               config=inputs.config.replace(progress=inputs.progress),
                               task_configs=inputs.task_configs, resume=True)
        results[m.name] = {"scores": {t: s.best for t, s in suite.tasks.items()},
                           "score": suite.score if suite.score is not None else suite.avg,
                           "finetuned_dirs": {t: str(stage_dir / m.name / t / "model") for t in suite.tasks}}
    return ModelsOutputs(models=[m.replace(**results[m.same_as or m.name]) for m in inputs.models])


def report(inputs: ReportInputs, stage_dir: Path, resume: bool) -> ReportOutputs:
    """Reads every stage's files (`autotinybert report RUN_DIR` rebuilds it at any time)."""
    from .report import write_report

    return ReportOutputs(report=str(write_report(stage_dir.parent)))
