"""One-shot SuperPLM training (Algorithm 1) and further training, with MLM or KD, on DDP; the search's loss proxy."""

from .config import TrainConfig, TrainConfigError, TrainModelConfig, TrainSupernetConfig
from .trainer import train_model, train_supernet
from .validation import LossProxy

__all__ = ["LossProxy", "TrainConfig", "TrainConfigError", "TrainModelConfig", "TrainSupernetConfig",
           "train_model", "train_supernet"]
