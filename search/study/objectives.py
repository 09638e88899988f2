"""The study's objectives and a trial's result record: which values Optuna optimizes, the
budgets as constraints, the user-attribute names under which a trial keeps its result or its
failure, and the feasible Pareto front read back from those records."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from edgenas.config import SearchConfig

#: the trial user attributes that hold its result record, or why it failed: written by a trial,
#: read by the front, the report, the export and the twin search
RESULT_ATTR = "result"
FAIL_ATTR = "fail_reason"
#: the objectives' names as Optuna metric names (the dashboard's axis labels)
METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "size": "size_mb"}


def latency_ms(result: dict[str, Any]) -> float:
    """The latency a trial is judged by: the median run, or for QA the time to answer a question
    (a shorter sequence is faster per window but needs more windows per context)."""
    return float(result.get("ms_per_question", result["median_ms"]))


def objective_values(config: SearchConfig, result: dict[str, Any]) -> list[float]:
    """The study's objectives in config order, from a trial's result record."""
    picks = {"accuracy": result["accuracy"], "latency": latency_ms(result), "size": result["size_mb"]}
    return [float(picks[name]) for name in config.objectives]


def set_constraints(trial: optuna.Trial, config: SearchConfig, result: dict[str, Any]) -> None:
    """Budgets as Optuna constraints: feasible when every value is <= 0."""
    budgets = config.budgets
    if budgets.max_latency_ms is not None:
        trial.set_constraint("latency", latency_ms(result) - budgets.max_latency_ms)
    if budgets.max_size_mb is not None:
        trial.set_constraint("size", result["size_mb"] - budgets.max_size_mb)
    if budgets.min_accuracy is not None:
        trial.set_constraint("accuracy", budgets.min_accuracy - result["accuracy"])


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front (best_trials honours constraints), fastest first, each candidate once."""
    trials = [t for t in study.best_trials
              if RESULT_ATTR in t.user_attrs and "duplicate_of" not in t.user_attrs[RESULT_ATTR]]
    return sorted(trials, key=lambda t: latency_ms(t.user_attrs[RESULT_ATTR]))
