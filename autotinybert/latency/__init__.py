"""Latency on the user's own device: measurement, the BERT-base reference, the latency dataset, predictors."""

from .dataset import LatencyDataset, MeasureSummary, load_datasets, measure_dataset, read_dataset, sample_archs
from .device import (DeviceMismatchError, DeviceMismatchWarning, compare_records, device_record)
from .measure import (LatencyRecord, TimingStats, build_model, export_onnx, measure_latency, summarize,
                      time_interleaved)
from .models import AnalyticModel, MLPModel
from .predictor import FitReport, LatencyPredictor, Metrics, cross_validate, fit_predictor

__all__ = [
    "LatencyDataset", "MeasureSummary", "load_datasets", "measure_dataset", "read_dataset", "sample_archs",
    "DeviceMismatchError", "DeviceMismatchWarning", "compare_records", "device_record",
    "AnalyticModel", "MLPModel", "FitReport", "LatencyPredictor", "Metrics", "cross_validate", "fit_predictor",
    "LatencyRecord", "TimingStats", "build_model", "export_onnx", "measure_latency", "summarize", "time_interleaved",
]
