"""Latency on the user's own device: measurement, the BERT-base reference, the latency dataset, predictors.

The names load on first access: torch only when something measures.
"""

from .._lazy import lazy_exports

__all__ = [
    "LatencyDataset", "MeasureSummary", "load_datasets", "measure_dataset", "read_dataset", "sample_archs",
    "DeviceMismatchError", "DeviceMismatchWarning", "compare_records", "device_record",
    "AnalyticModel", "BoostedModel", "MLPModel", "FitReport", "LatencyPredictor", "Metrics", "cross_validate",
    "fit_predictor",
    "LatencyRecord", "TimingStats", "build_model", "export_onnx", "measure_latency", "summarize", "time_interleaved",
    "ANCHORS", "pair_ratio", "ratio_statistic", "time_paired",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".dataset": ["LatencyDataset", "MeasureSummary", "load_datasets", "measure_dataset", "read_dataset",
                 "sample_archs"],
    ".device": ["DeviceMismatchError", "DeviceMismatchWarning", "compare_records", "device_record"],
    ".measure": ["LatencyRecord", "TimingStats", "build_model", "export_onnx", "measure_latency", "summarize",
                 "time_interleaved", "ANCHORS", "pair_ratio", "ratio_statistic", "time_paired"],
    ".models": ["AnalyticModel", "BoostedModel", "MLPModel"],
    ".predictor": ["FitReport", "LatencyPredictor", "Metrics", "cross_validate", "fit_predictor"],
})
