"""Quiet third-party output: with ``progress=false`` a run prints its own lines only, not transformers' and the
Hub's progress bars ("Writing model shards", "Loading weights") or the weight-loading report tables."""

from __future__ import annotations

import os
import sys


def quiet_libraries() -> None:
    """Silence transformers' / huggingface_hub's bars and info tables for the rest of the process (errors still
    show). Imports nothing: before transformers is imported, its environment switches do the same."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
