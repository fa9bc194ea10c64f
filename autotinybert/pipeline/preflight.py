"""Cheap checks of a pipeline run before its first stage: what would otherwise fail hours in, or be accepted
silently. Each takes seconds at most and names the config key to change.

* the run folder can be written (not read-only, not under a file) and is not inside a corpus folder;
* every corpus file is text (random bytes or a binary refused, not packed into "training sequences");
* ``data.tokenizer`` loads;
* a KD teacher's vocabulary matches ``data.tokenizer`` (a WordPiece trained on the corpus never does).

The search window's order and the targets' reach are checked elsewhere (config validation; after the predictor).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .config import PipelineConfig


def preflight(cfg: PipelineConfig) -> None:
    """Raise `UserError` for the first problem found (nothing is written)."""
    from ..data.corpus import list_corpus_files
    from ..io import check_writable

    from ..io import overlap

    check_writable(cfg.out, key="out")
    for corpus in cfg.data.corpus:  # a run folder inside a corpus folder would be read back as training text
        if Path(corpus).exists() and overlap(cfg.out, corpus) in ("is", "sits inside"):
            raise UserError(f"out={cfg.out} is inside the corpus folder data.corpus={corpus}: the run's files would "
                            "become training text; choose an out outside it")
    if all(Path(c).exists() for c in cfg.data.corpus):  # (the demo builds its corpus at run time)
        list_corpus_files(cfg.data.corpus)  # binary / non-UTF-8 files refused here
    if cfg.data.tokenizer is not None:
        from ..data.tokenizer import TokenizerError, load_tokenizer

        try:
            load_tokenizer(cfg.data.tokenizer)
        except TokenizerError as err:
            raise UserError(f"data.tokenizer: {err}") from None
    check_teacher_vocabulary(cfg)


def check_teacher_vocabulary(cfg: PipelineConfig) -> None:
    """A `kd` section's teacher must share `data.tokenizer`'s vocabulary (ids are fed to both models)."""
    for section in ("supernet", "further_train"):
        settings = getattr(cfg, section)
        if settings.objective != "kd" or not settings.teacher:
            continue
        teacher = settings.teacher
        if cfg.data.tokenizer is None:
            raise UserError(f"{section}.objective=kd distils from {teacher}, but data.tokenizer is null, so a "
                            "WordPiece vocabulary would be trained on the corpus, which the teacher does not "
                            f"share: set data.tokenizer to the teacher's tokenizer (data.tokenizer={teacher})")
        _compare(section, teacher, cfg.data.tokenizer)


def _compare(section: str, teacher: str, tokenizer_name: str) -> None:
    from transformers import AutoConfig

    from ..data.tokenizer import load_tokenizer

    try:
        teacher_config = AutoConfig.from_pretrained(str(teacher))
    except (OSError, ValueError) as err:
        raise UserError(f"{section}.teacher={teacher} cannot be read ({err}); give a BERT-like model folder or "
                        "hub name") from None
    tokenizer = load_tokenizer(tokenizer_name)
    vocab_size = getattr(teacher_config, "vocab_size", None)
    if vocab_size is not None and int(vocab_size) != len(tokenizer):
        raise UserError(f"{section}.teacher={teacher} has vocab_size {vocab_size} but data.tokenizer={tokenizer_name} "
                        f"has {len(tokenizer)} tokens; set data.tokenizer to the teacher's tokenizer "
                        f"(data.tokenizer={teacher})")
    folder = Path(str(teacher)).expanduser()
    if (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file():
        if load_tokenizer(folder).get_vocab() != tokenizer.get_vocab():
            raise UserError(f"{section}.teacher={teacher} uses another vocabulary than data.tokenizer="
                            f"{tokenizer_name} (same size, other tokens or ids); set data.tokenizer to the "
                            f"teacher's tokenizer (data.tokenizer={teacher})")
