"""The demo's ``docpair`` task (see `corpus.py`), registered with the downstream task registry."""

from __future__ import annotations

from ..downstream.tasks import TaskSpec, TSVLayout, register_task

# label, sentence1, sentence2 with a header row; label 1 = both sentences come from the same docstring
DOCPAIR = register_task(TaskSpec("docpair", "docpair", "classification", ("0", "1"), "accuracy",
                                 (("dev", "dev.tsv"),), 1e-4, 3, 32, 128,
                                 TSVLayout(text_a=1, text_b=2, label=0)))
