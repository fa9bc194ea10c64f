"""The pipeline's stage functions: ``stage(inputs, stage_dir, resume) -> outputs``, each reading only its typed
inputs (`stage_types`) and writing only inside its stage folder. `plan` builds their inputs; `run` runs them."""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import atomic_write_json
from .stage_types import (BaselinesInputs, ExtractInputs, ExtractOutputs, FinetuneInputs, FurtherTrainInputs,
                          LatencyInputs, LatencyOutputs, ModelEntry, ModelsOutputs, PredictorInputs, PredictorOutputs,
                          ReportInputs, ReportOutputs, SearchInputs, SearchOutputs, SearchPick, SelectionSettings,
                          SupernetInputs, SupernetOutputs, TaskStats, TimedArch, TokenizeInputs, TokenizeOutputs)

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
    (e.g. 4-312-1200-12-312). The latency campaign times these."""
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


def _nearest(values, target: float) -> int:
    return min(values, key=lambda v: (abs(v - target), v))


def conventional_family(space, head_size: int) -> list:
    """The conventional archs on the finest grid the space allows: every layer count and every hidden size of the
    space, with BERT's rule as near as the grid permits -- ffn the grid value nearest 4 hidden, and qkv nearest
    hidden (a `dims` space keeps its fixed heads, as the paper's 4-512-2048-12-516; a `heads` space takes
    heads = round(hidden / head_size)). Where hidden fits the rule exactly these are `conventional_candidates`."""
    from ..arch import Arch

    out = []
    for layers in space.layers.values():
        for hidden in space.hidden.values():
            ffn = _nearest(space.ffn.values(), 4 * hidden)
            if space.attention == "dims":
                arch = Arch(layers, hidden, ffn, space.heads.high, _nearest(space.qkv.values(), hidden))
            else:
                heads = _nearest(space.heads.values(), hidden / head_size)
                arch = Arch(layers, hidden, ffn, heads, heads * head_size)
            if space.contains(arch) and arch not in out:
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
    if inputs.init_arch and inputs.init_arch not in {str(a) for a in sampled}:
        from ..arch import Arch

        sampled.append(Arch.parse(inputs.init_arch))  # the checkpoint's own arch: targets may be relative to it
    rule = set(conventional_candidates(space, lat.baseline_head_size))
    candidates = sorted(rule - set(sampled), key=str)
    if not rule:
        raise UserError(f"the search space holds no conventional-rule arch (ffn = 4 hidden, heads = hidden / "
                        f"{lat.baseline_head_size}); widen it or set latency.baseline_head_size")
    log(f"[latency] timing {len(sampled)} sampled + {len(candidates)} conventional archs + BERT-base")
    archs = sampled + candidates
    lines, references, init = [], [], None
    # the interleaved protocol builds its models before timing them: bound the memory by chunks; the anchored one
    # builds one at a time, and one campaign keeps every arch on one calibrated chain
    chunk = lat.chunk if lat.protocol == "interleaved" else len(archs)
    for start in range(0, len(archs), chunk):
        records = measure_latency(archs[start:start + chunk], **lat.timing_kwargs(), reference=True,
                                  seed=inputs.seed)
        for rec in records:
            role = ("reference" if rec.is_reference else "init" if str(rec.arch) == inputs.init_arch
                    else "conventional" if rec.arch in rule else "sampled")
            row = {**rec.to_dict(), "role": role}
            lines.append(json.dumps(row))
            init = row if role == "init" else init
        references.append(records[-1].median_ms)
    (stage_dir / "latency.jsonl").write_text("\n".join(lines) + "\n")
    reference_ms = float(sorted(references)[len(references) // 2])  # median over the chunks' BERT-base runs
    # anchored protocol: its measured fraction of BERT-base, on the campaign's scale; else its own median
    init_ms = None if init is None else init["ratio"] * reference_ms if init.get("ratio") else init["median_ms"]
    return LatencyOutputs(records=str(stage_dir / "latency.jsonl"), reference_ms=reference_ms, init_ms=init_ms)


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
                            chosen=fitted.report.chosen if fitted.report else inputs.predictor.kind,
                            init_ms=inputs.latency.init_ms)


def steps_trained(run: str | Path) -> int:
    """Optimizer steps a finished training run made (its last checkpoint: a time budget may stop it early)."""
    from ..train.checkpoint import STATE_NAME, list_checkpoints

    checkpoints = list_checkpoints(Path(run))
    if not checkpoints:
        raise UserError(f"training run {run} has no checkpoint: it did not finish")
    return int(json.loads((checkpoints[-1] / STATE_NAME).read_text())["step"])


def supernet(inputs: SupernetInputs, stage_dir: Path, resume: bool) -> SupernetOutputs:
    from ..train import train_supernet
    from ..train.config import TrainSupernetConfig
    from ..train.validation import PROJECTION_NAME

    out = stage_dir / "supernet"
    can_resume = _can_resume(out, resume)
    path = train_supernet(TrainSupernetConfig.from_dict({
        **inputs.supernet.to_dict(), **inputs.data.to_dict(), "tokenizer": inputs.tokenized.tokenizer_dir,
        "seed": inputs.seed, "progress": inputs.progress, "out": str(out), "resume": can_resume,
        "overwrite": not can_resume}))
    projection = Path(path) / PROJECTION_NAME
    return SupernetOutputs(supernet=str(path), steps=steps_trained(path),
                           projection=str(projection) if projection.is_file() else None)


def search(inputs: SearchInputs, stage_dir: Path, resume: bool) -> SearchOutputs:
    """One search for one target; the stage keeps its top_k winners (best first)."""
    from ..search import run_search
    from ..search.config import SearchConfig

    out = stage_dir / "search"
    result = run_search(SearchConfig.from_dict({
        **inputs.search.to_dict(), "speedup": inputs.speedup, "plot": inputs.plot, "data": inputs.downstream,
        "supernet": inputs.supernet.supernet, "predictor": inputs.predictor.predictor, "seed": inputs.seed,
        "progress": inputs.progress, "out": str(out), "resume": resume, "overwrite": not resume}))
    top = [SearchPick(arch=r.arch, predicted_ms=r.latency_ms, predicted_speedup=r.speedup, fitness=r.fitness,
                      scores=r.scores) for r in result.best]
    best = top[0]
    return SearchOutputs(arch=best.arch, predicted_ms=best.predicted_ms, predicted_speedup=best.predicted_speedup,
                         fitness=best.fitness, scores=best.scores, out=str(out), generations=result.generations,
                         evaluated=len(result.candidates), top=top)


def extract(inputs: ExtractInputs, stage_dir: Path, resume: bool) -> ExtractOutputs:
    """Per target: the top k searched archs and the fast-rule pick, extracted from the supernet; beside them, the
    conventional archs nearest each candidate's predicted latency on the space's finest conventional grid. All of
    them are timed in one interleaved run with BERT-base; the baselines stage picks the conventional arch closest
    to the chosen candidate's measured latency."""
    from ..arch import Arch
    from ..extract import extract as extract_arch
    from ..extract import save_extracted
    from ..latency import LatencyPredictor, measure_latency
    from ..supernet import SuperBertForMaskedLM

    supernet_dir = inputs.supernet.supernet
    latency_model = LatencyPredictor.load(inputs.predictor.predictor)
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_dir)
    family = conventional_family(supernet.space, inputs.baseline_head_size)
    if not family:
        raise UserError(f"the search space holds no conventional arch (ffn ~ 4 hidden, qkv ~ hidden, heads = "
                        f"hidden / {inputs.baseline_head_size}); widen it or set latency.baseline_head_size")
    family_ms = {str(a): latency_model.predict(a) for a in family}
    entries: list[ModelEntry] = []
    timed: list[tuple[float, str]] = []  # (target, conventional arch)

    for target in inputs.targets:
        speedup, tag = target.speedup, target_tag(target.speedup)
        picks = target.searched.top or [SearchPick(arch=target.searched.arch, predicted_ms=target.searched.predicted_ms,
                                                   predicted_speedup=target.searched.predicted_speedup,
                                                   fitness=target.searched.fitness, scores=target.searched.scores)]
        named = [(f"top{r}-{tag}", "candidate", pick, r) for r, pick in enumerate(picks[:inputs.top_k], start=1)]
        if target.fast is not None:
            named.append((f"fast-{tag}", "fast", SearchPick(arch=target.fast.arch, predicted_ms=target.fast.predicted_ms,
                                                           predicted_speedup=target.fast.predicted_speedup,
                                                           fitness=target.fast.fitness, scores=target.fast.scores), None))
        log(f"[extract] {tag}: candidates {', '.join(p.arch for _, kind, p, _ in named if kind == 'candidate')}"
            + (f"; fast rule {target.fast.arch}" if target.fast is not None else ""))
        for name, kind, pick, rank in named:
            common = dict(name=name, kind=kind, speedup_target=speedup, arch=pick.arch, search_rank=rank,
                          search_fitness=pick.fitness, predicted_ms=latency_model.predict(pick.arch),
                          inherited_steps=inputs.supernet.steps)
            twin = next((e for e in entries if e.arch == pick.arch and e.speedup_target == speedup), None)
            if twin is not None:  # the fast rule picked a candidate's arch: same weights, same results
                entries.append(ModelEntry(**common, extracted_dir=twin.extracted_dir, same_as=twin.name))
                continue
            model = extract_arch(supernet, Arch.parse(pick.arch), head="mlm")
            path = save_extracted(model, stage_dir / name, tokenizer_dir=supernet_dir, overwrite=True)
            entries.append(ModelEntry(**common, extracted_dir=str(path)))
            if kind == "candidate":  # the conventional archs around this candidate's latency
                ms = latency_model.predict(pick.arch)
                near = sorted(family_ms, key=lambda a: (abs(family_ms[a] - ms), a))[:inputs.conventional_candidates]
                timed += [(speedup, a) for a in near if (speedup, a) not in timed]
    # every chosen arch and the conventional archs around them, in one interleaved run with BERT-base
    # (and the init_from checkpoint's arch, the user's own model, beside them)
    archs = sorted({e.arch for e in entries} | {a for _, a in timed} | ({inputs.init_arch} if inputs.init_arch else set()))
    log(f"[extract] timing {len(archs)} archs with BERT-base")
    records = measure_latency(archs, **inputs.latency.timing_kwargs(), reference=True, seed=inputs.seed)
    ref = records[-1].median_ms
    measured = {str(r.arch): r.median_ms for r in records[:-1]}
    init_ms = measured[inputs.init_arch] if inputs.init_arch else None

    def timed_entry(e: ModelEntry) -> ModelEntry:
        return e.replace(measured_ms=measured[e.arch], measured_speedup=ref / measured[e.arch],
                         measured_speedup_init=init_ms / measured[e.arch] if init_ms else None)

    init = None
    if inputs.init_arch:
        init = timed_entry(ModelEntry(name="init", kind="init", speedup_target=1.0, arch=inputs.init_arch,
                                      extracted_dir=inputs.init_dir, trained_dir=inputs.init_dir,
                                      predicted_ms=latency_model.predict(inputs.init_arch)))
    conventional = [TimedArch(speedup_target=t, arch=a, predicted_ms=family_ms[a], measured_ms=measured[a])
                    for t, a in timed]
    outputs = ExtractOutputs(models=[timed_entry(e) for e in entries], conventional=conventional, reference_ms=ref,
                             init=init)
    atomic_write_json(stage_dir / "models.json", outputs.to_dict())
    from .cards import describe_extracted

    describe_extracted(outputs, inputs)  # model cards: how each arch was found, its measured latency
    return outputs


def _train(settings: dict, inputs, model_dir: str, out: Path, resume: bool) -> Path:
    """`train_model` of `model_dir` into `out` with the pipeline's corpus, tokenizer and seed (resumes a run that
    was interrupted in the same stage run)."""
    from ..train import train_model
    from ..train.config import TrainModelConfig

    can_resume = _can_resume(out, resume)
    return train_model(TrainModelConfig.from_dict({
        **settings, **inputs.data.to_dict(), "tokenizer": inputs.tokenized.tokenizer_dir, "seed": inputs.seed,
        "progress": inputs.progress, "model": model_dir, "out": str(out), "resume": can_resume,
        "overwrite": not can_resume}))


def _projection(settings, supernet: SupernetOutputs) -> str | None:
    """KD further training starts from the supernet's trained projection (when the supernet distilled too)."""
    return supernet.projection if settings.objective == "kd" else None


def further_train(inputs: FurtherTrainInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    """Further-train every candidate and the fast pick with the same budget (a `same_as` twin shares its twin's),
    then choose each target's searched model among its candidates."""
    settings = inputs.further_train.to_dict()
    del settings["top_k"]
    settings["kd_projection"] = _projection(inputs.further_train, inputs.supernet)
    trained: dict[str, tuple[str, int]] = {}
    for m in inputs.extract.models:
        if m.same_as:
            continue
        out = stage_dir / m.name
        if not (out / "TRAINED.json").is_file():
            log(f"[further-train] {m.name} ({m.arch})")
            _train(settings, inputs, m.extracted_dir, out, resume)
            if is_main_process():
                atomic_write_json(out / "TRAINED.json", {"model": m.name})
        trained[m.name] = (str(out), steps_trained(out))
    models = [m.replace(trained_dir=trained[m.same_as or m.name][0], train_steps=trained[m.same_as or m.name][1])
              for m in inputs.extract.models]
    return ModelsOutputs(models=select_searched(models, inputs, stage_dir))


def select_searched(models: list[ModelEntry], inputs: FurtherTrainInputs, stage_dir: Path) -> list[ModelEntry]:
    """Per target, the further-trained candidate with the best evaluator score becomes `searched-<target>` (ties:
    the better search rank); with one candidate there is nothing to evaluate. Rank 0 evaluates (the other ranks'
    outputs are replaced by rank 0's)."""
    chosen: dict[str, str] = {}  # candidate name -> searched name
    evaluated: dict[str, tuple[dict[str, float], float]] = {}
    for target in sorted({m.speedup_target for m in models}):
        candidates = [m for m in models if m.kind == "candidate" and m.speedup_target == target]
        if inputs.selection is not None and len(candidates) > 1 and is_main_process():
            for m in candidates:
                evaluated[m.name] = evaluate_trained(m, inputs.selection, inputs.seed, stage_dir)
            best = max(candidates, key=lambda m: (evaluated[m.name][1], -m.search_rank))
            log(f"[further-train] {target_tag(target)}: {best.name} ({best.arch}) is the searched model: "
                + ", ".join(f"{m.name} {evaluated[m.name][1]:.4g}" for m in candidates))
        else:
            best = candidates[0]
        chosen[best.name] = f"searched-{target_tag(target)}"
    out = []
    for m in models:
        scores, fitness = evaluated.get(m.name, ({}, None))
        m = m.replace(selection=scores, selection_fitness=fitness)
        if m.name in chosen:
            m = m.replace(name=chosen[m.name], kind="searched")
        if m.same_as in chosen:
            m = m.replace(same_as=chosen[m.same_as])
        out.append(m)
    return out


def evaluate_trained(model: ModelEntry, selection: SelectionSettings, seed: int,
                     stage_dir: Path) -> tuple[dict[str, float], float]:
    """(scores, fitness) of a further-trained model by the search's evaluator: loss -> its validation loss at the
    end of further training (fitness = -loss); finetune -> the search's budgeted fine-tune on its tasks (fitness =
    mean). Cached in the stage folder, so a resumed stage does not redo it."""
    cache = stage_dir / model.name / "SELECTION.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["scores"], saved["fitness"]
    if selection.evaluator == "loss":
        from ..train.metrics import METRICS_NAME

        records = [json.loads(line) for line in (Path(model.trained_dir) / METRICS_NAME).read_text().splitlines()]
        loss = [r for r in records if r["event"] == "eval"][-1]["val_loss_model"]
        scores, fitness = {"loss": loss}, -loss
    else:
        from ..downstream import Budget, finetune, parse_tasks

        budget = Budget.from_dict(selection.budget)
        scores = {}
        for spec in parse_tasks(selection.tasks):
            result = finetune(model.trained_dir, spec, selection.downstream, None,
                              budget.finetune_config(spec, selection.downstream, seed))
            scores[spec.name] = result.best_score  # as the search's finetune evaluator scores
        fitness = sum(scores.values()) / len(scores)
    atomic_write_json(cache, {"scores": scores, "fitness": fitness})
    return scores, fitness


def baselines(inputs: BaselinesInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    """Per target, the conventional arch timed closest to the searched model's measured latency, twice:
    conventional-inherited (extracted from the supernet, further-trained like the searched model) and
    conventional-scratch (fresh weights, trained for the searched model's whole budget -- supernet steps + its
    further-training steps -- with its own warm-up and data order)."""
    from ..arch import Arch
    from ..extract import extract as extract_arch
    from ..extract import save_extracted
    from ..modeling import AutoTinyBertForMaskedLM
    from ..seeding import derive_seed, forked_global_rng
    from ..supernet import SuperBertForMaskedLM

    supernet_dir = inputs.supernet.supernet
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_dir)
    further = inputs.further_train.to_dict()
    del further["top_k"]
    planned: list[tuple[ModelEntry, dict | None]] = []  # (entry, its training settings; None: reuses a twin)
    for searched in (m for m in inputs.trained.models if m.kind == "searched"):
        target, tag = searched.speedup_target, target_tag(searched.speedup_target)
        timed = [c for c in inputs.extract.conventional if c.speedup_target == target]
        base = min(timed, key=lambda c: (abs(c.measured_ms - searched.measured_ms), c.arch))
        log(f"[baselines] {tag}: {base.arch} measured {base.measured_ms:.2f} ms vs searched {searched.arch} "
            f"{searched.measured_ms:.2f} ms ({100 * (base.measured_ms / searched.measured_ms - 1):+.1f} %), the "
            f"closest of {len(timed)} conventional archs timed beside it")
        common = dict(speedup_target=target, arch=base.arch, predicted_ms=base.predicted_ms,
                      measured_ms=base.measured_ms, measured_speedup=inputs.extract.reference_ms / base.measured_ms,
                      measured_speedup_init=(inputs.extract.init.measured_ms / base.measured_ms
                                             if inputs.extract.init is not None else None))
        inherited_dir = stage_dir / "init" / f"conventional-inherited-{tag}"
        scratch_dir = stage_dir / "init" / f"conventional-scratch-{tag}"
        if is_main_process():  # the initial weights: rank 0 writes, every rank trains from them
            template = extract_arch(supernet, Arch.parse(base.arch), head="mlm")
            save_extracted(template, inherited_dir, tokenizer_dir=supernet_dir, overwrite=True)
            with forked_global_rng(derive_seed(inputs.seed, purpose="conventional-scratch-init")):
                scratch = AutoTinyBertForMaskedLM(template.config)  # BERT's initialisation, seeded
            save_extracted(scratch, scratch_dir, tokenizer_dir=supernet_dir, overwrite=True)
        inherited = ModelEntry(name=f"conventional-inherited-{tag}", kind="conventional-inherited",
                               extracted_dir=str(inherited_dir), inherited_steps=inputs.supernet.steps, **common)
        if base.arch == searched.arch:  # the searched arch is itself conventional: same weights, same training
            planned.append((inherited.replace(same_as=searched.name, trained_dir=searched.trained_dir,
                                              train_steps=searched.train_steps), None))
        else:
            planned.append((inherited, {**further, "kd_projection": _projection(inputs.further_train,
                                                                                 inputs.supernet)}))
        planned.append((ModelEntry(name=f"conventional-scratch-{tag}", kind="conventional-scratch",
                                   extracted_dir=str(scratch_dir), inherited_steps=0, **common),
                        {**further, "max_steps": inputs.supernet.steps + searched.train_steps,
                         "warmup_ratio": inputs.warmup_ratio, "stream": "conventional-scratch",
                         "kd_projection": None}))
    _barrier()
    models = []
    for entry, settings in planned:
        if settings is not None:
            out = stage_dir / entry.name
            if not (out / "TRAINED.json").is_file():
                log(f"[baselines] {entry.name} ({entry.arch}): {settings['max_steps']} steps, warm-up "
                    f"{settings['warmup_ratio']:g}")
                _train(settings, inputs, entry.extracted_dir, out, resume)
                if is_main_process():
                    atomic_write_json(out / "TRAINED.json", {"model": entry.name})
            entry = entry.replace(trained_dir=str(out), train_steps=steps_trained(out))
        models.append(entry)
    return ModelsOutputs(models=models)


def _barrier() -> None:
    """Wait for every rank under torchrun (rank 0 writes files the others then read); a no-op otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finetune(inputs: FinetuneInputs, stage_dir: Path, resume: bool) -> ModelsOutputs:
    """Fine-tune every model but the candidates that were not chosen, `seeds` times per task; per (model, task)
    the mean and spread of the final-epoch dev score, and the best-on-dev score beside it."""
    from ..downstream import evaluate_suite
    from ..downstream.suite import headline_score, run_jobs, suite_jobs

    seeds = [inputs.config.seed + i for i in range(inputs.seeds)]
    models = [m for m in inputs.models if not (m.same_as or m.kind == "candidate")]

    def settings(seed: int):
        return inputs.config.replace(progress=inputs.progress, seed=seed)

    if inputs.workers > 1:  # every (model, seed, task) at once, the checkpoint first, then the targets in order
        order = sorted(models, key=lambda m: (m.kind != "init", m.speedup_target or 0.0))
        jobs = [job for m in order for seed in seeds
                for job in suite_jobs(m.trained_dir, inputs.tasks, inputs.downstream,
                                      stage_dir / m.name / f"seed-{seed}", settings(seed),
                                      task_configs=inputs.task_configs)]
        log(f"[finetune] {sum(not j.finished for j in jobs)} of {len(jobs)} fine-tunes to run, {inputs.workers} at "
            "a time")
        run_jobs(jobs, inputs.workers, log=log)
    results: dict[str, dict] = {}
    for m in models:
        log(f"[finetune] {m.name} on {', '.join(inputs.tasks)}" + (f", seeds {seeds}" if len(seeds) > 1 else ""))
        suites = [evaluate_suite(m.trained_dir, inputs.tasks, inputs.downstream, stage_dir / m.name / f"seed-{seed}",
                                 config=settings(seed), task_configs=inputs.task_configs, resume=True)
                  for seed in seeds]
        tasks = {name: task_stats(name, seeds, [suite.tasks[name] for suite in suites], suites[0].out_dir)
                 for name in suites[0].tasks}
        final = {t: s.final_mean for t, s in tasks.items()}
        best = {t: s.best_mean for t, s in tasks.items()}
        seed_scores = [headline_score({t: s.final[i] for t, s in tasks.items()}) for i in range(len(seeds))]
        results[m.name] = {"scores": final, "best_scores": best, "tasks": tasks,
                           "score": headline_score(final), "best_score": headline_score(best),
                           "seed_scores": seed_scores,
                           "finetuned_dirs": {t: str(stage_dir / m.name / f"seed-{seeds[0]}" / t / "model")
                                              for t in tasks}}
    return ModelsOutputs(models=[m.replace(**results[m.same_as or m.name]) if (m.same_as or m.name) in results
                                 else m for m in inputs.models])


def task_stats(task: str, seeds: list[int], scores: list, out_dir: str | None) -> TaskStats:
    """One task's `TaskScore`s over the seeds -> mean / sample std of the final score, mean of the best."""
    import statistics

    final = [s.final for s in scores]
    best = [s.best for s in scores]
    result = Path(out_dir) / task / "result.json" if out_dir else None
    counts = json.loads(result.read_text()).get("eval_examples", {}) if result and result.is_file() else {}
    return TaskStats(main_metric=scores[0].main_metric, seeds=seeds, final=final, best=best,
                     final_mean=statistics.fmean(final), final_std=statistics.stdev(final) if len(final) > 1 else None,
                     best_mean=statistics.fmean(best), eval_examples=sum(counts.values()) if counts else 0,
                     note=scores[0].note)


def report(inputs: ReportInputs, stage_dir: Path, resume: bool) -> ReportOutputs:
    """Reads every stage's files (`autotinybert report RUN_DIR` rebuilds it at any time)."""
    from .report import write_report

    return ReportOutputs(report=str(write_report(stage_dir.parent)))
