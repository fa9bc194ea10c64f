"""Architecture search under a latency constraint (paper §3.5, Algorithm 2, §4.4, Appendix E).

    from autotinybert.search import run_search
    result = run_search({"supernet": "runs/supernet", "predictor": "runs/latency.json", "speedup": 10,
                         "method": "evolved", "evaluator": "loss", "out": "runs/search"})
    print(result.best_arch)

Pieces: `LatencyWindow` (target and admissible window), `AdmissibleSampler` (bounded sampling with a clear
infeasibility error), `propose_generation` (evolved / random / fast), evaluators (`FinetuneEvaluator`,
`LossEvaluator`, `CallableEvaluator`), `run_search` (parallel, resumable, writes candidates.jsonl / best.json /
search.png) and ranking quality (`pairwise_accuracy`, `kendall_tau`). The names load on first access.
"""

from .._lazy import lazy_exports

__all__ = [
    "AdmissibleSampler", "CallableEvaluator", "CandidateLog", "CandidateRecord", "DEFAULT_WINDOW", "Evaluation",
    "Evaluator", "EvaluatorError", "FinetuneEvaluator", "FlopsLatencyModel", "GenerationPlan", "InfeasibleTargetError", "LatencyModel",
    "LatencyWindow", "LossEvaluator", "METHODS", "MethodParams", "Proposal", "RankingError", "RankingQuality",
    "SearchConfig", "SearchConfigError", "SearchResult", "TargetError", "as_evaluator", "compare_score_sets",
    "kendall_tau", "load_predictor", "load_scores", "pairwise_accuracy", "propose_generation", "ranking_quality",
    "read_records", "roulette_select", "run_search", "satisfies_fast_rule", "to_evaluation",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".evaluators": ["CallableEvaluator", "Evaluation", "Evaluator", "EvaluatorError", "FinetuneEvaluator",
                    "LossEvaluator", "as_evaluator", "to_evaluation"],
    ".methods": ["METHODS", "GenerationPlan", "MethodParams", "Proposal", "propose_generation", "roulette_select"],
    ".ranking": ["RankingError", "RankingQuality", "compare_score_sets", "kendall_tau", "load_scores",
                 "pairwise_accuracy", "ranking_quality"],
    ".records": ["CandidateLog", "CandidateRecord", "read_records"],
    ".runner": ["SearchConfig", "SearchConfigError", "SearchResult", "load_predictor", "run_search"],
    ".sampling": ["AdmissibleSampler", "InfeasibleTargetError", "satisfies_fast_rule"],
    ".target": ["DEFAULT_WINDOW", "FlopsLatencyModel", "LatencyModel", "LatencyWindow", "TargetError"],
})
