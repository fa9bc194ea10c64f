"""One-shot SuperPLM training (Algorithm 1) and further training, with MLM or KD, on one process or many; the search's
loss proxy.

The names load on first access, so the configs (`autotinybert.train.config`) import without torch.
"""

from .._lazy import lazy_exports

__all__ = ["LossProxy", "TrainConfig", "TrainConfigError", "TrainModelConfig", "TrainSupernetConfig",
           "train_model", "train_supernet"]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ["TrainConfig", "TrainConfigError", "TrainModelConfig", "TrainSupernetConfig"],
    ".trainer": ["train_model", "train_supernet"],
    ".validation": ["LossProxy"],
})
