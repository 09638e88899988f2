"""The study's objectives and a trial's result record: which values Optuna optimizes, the
budgets as constraints, the user-attribute names under which a trial keeps its result or its
failure, and the feasible Pareto front read back from those records (with the trials whose accuracy the
search could not tell from its best)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from edgenas.config import ACCURACY_FLOORS, OBJECTIVES, SearchConfig
from edgenas.runtime.measurement import Measurement
from edgenas.search.study.verdict import BASELINES_ATTR, best_baseline
from edgenas.search.uncertainty import clearly_better, difference_margin

#: the trial user attributes that hold its result record, or why it failed: written by a trial,
#: read by the front, the report, the export and the twin search
RESULT_ATTR = "result"
FAIL_ATTR = "fail_reason"
#: the objectives' names as Optuna metric names (the dashboard's axis labels)
METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "size": "size_mb"}


@dataclass(frozen=True)
class TrialResult:
    """A measured candidate: its measurement on the target (dev set scored through the runtime),
    and what the trial adds: the same model's torch score, the artifact and its checks."""

    measurement: Measurement
    torch_accuracy: float
    size_mb: float
    accuracy_ci95: tuple[float, float]  # Wilson interval of the dev score over its n_eval examples
    artifact_meta: dict[str, Any] = field(default_factory=dict)
    artifact_id: str | None = None  # in the study's artifact store
    compile_cached: bool = False
    duplicate_of: int | None = None  # the earlier trial of the same candidate whose result this is

    @property
    def accuracy(self) -> float:
        return float(self.measurement.accuracy)

    @property
    def accuracy_n(self) -> int:
        """The dev examples (QA: questions) the accuracy was scored on."""
        return int(self.measurement.n_eval)

    @property
    def latency_ms(self) -> float:
        """The latency a trial is judged by: the median run, or for QA the time to answer a question
        (a shorter sequence is faster per window but needs more windows per context)."""
        return self.measurement.latency_ms

    @property
    def parity(self) -> dict[str, Any] | None:
        return self.artifact_meta.get("parity")

    def twin(self, number: int) -> "TrialResult":
        """This result, recorded for a later trial of the same candidate."""
        return dataclasses.replace(self, duplicate_of=number)

    def to_attrs(self) -> dict[str, Any]:
        """The JSON user attribute a trial stores: the measurement's flat fields and the trial's beside them."""
        own = {"accuracy_n": self.accuracy_n, "accuracy_ci95": list(self.accuracy_ci95),
               "torch_accuracy": self.torch_accuracy, "size_mb": self.size_mb, "parity": self.parity,
               "artifact_id": self.artifact_id, "artifact_sha256": self.artifact_meta.get("sha256"),
               "artifact_meta": self.artifact_meta, "compile_cached": self.compile_cached}
        twin = {} if self.duplicate_of is None else {"duplicate_of": self.duplicate_of}
        return {**self.measurement.to_json(), **own, **twin}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "TrialResult":
        """A stored result back (from any version that stored one)."""
        own = dict(attrs)
        fields = {name: own.pop(name) for name in ("torch_accuracy", "size_mb", "artifact_meta", "artifact_id",
                                                   "compile_cached", "duplicate_of") if name in own}
        n = own.pop("accuracy_n", None)
        own.setdefault("n_eval", n)
        interval = own.pop("accuracy_ci95", None)
        meta = dict(fields.get("artifact_meta") or {})
        for name, key in (("parity", "parity"), ("artifact_sha256", "sha256")):  # copies of artifact_meta's
            if name in own:
                meta.setdefault(key, own.pop(name))
        fields["artifact_meta"] = meta
        measurement = Measurement.from_json(own)
        ci95 = tuple(interval) if interval else (measurement.accuracy, measurement.accuracy)
        return cls(measurement=measurement, accuracy_ci95=ci95, **fields)


def result_of(trial: FrozenTrial) -> TrialResult | None:
    """The result a trial recorded (None: it failed or has not finished)."""
    attrs = trial.user_attrs.get(RESULT_ATTR)
    return None if attrs is None else TrialResult.from_attrs(attrs)


def objective_values(config: SearchConfig, result: TrialResult) -> list[float]:
    """The study's objectives in config order, from a trial's result."""
    picks = {"accuracy": result.accuracy, "latency": result.latency_ms, "size": result.size_mb}
    return [float(picks[name]) for name in config.objectives]


def set_constraints(trial: optuna.Trial, config: SearchConfig, result: TrialResult) -> None:
    """Budgets as Optuna constraints: feasible when every value is <= 0."""
    budgets = config.budgets
    if budgets.max_latency_ms is not None:
        trial.set_constraint("latency", result.latency_ms - budgets.max_latency_ms)
    if budgets.max_size_mb is not None:
        trial.set_constraint("size", result.size_mb - budgets.max_size_mb)
    if budgets.min_accuracy is not None:
        trial.set_constraint("accuracy", accuracy_floor(trial.study, config) - result.accuracy)


def accuracy_floor(study: optuna.Study, config: SearchConfig) -> float | None:
    """budgets.min_accuracy as a score (None: no floor): "baseline" is the best baseline on the study's dev rows."""
    return floor_of(config, study.user_attrs.get(BASELINES_ATTR))


def floor_of(config: SearchConfig, baselines: dict[str, Any] | None) -> float | None:
    """budgets.min_accuracy as a score against these baselines (None: no floor)."""
    floor = config.budgets.min_accuracy
    return best_baseline(baselines) if floor in ACCURACY_FLOORS else floor


def export_floor_miss(config: SearchConfig, baselines: dict[str, Any], accuracy: float, n: int) -> str | None:
    """Why a model that scored `accuracy` on n export dev examples misses budgets.min_accuracy (None: it does not).

    The baselines were scored on the same examples. "clearly_above_baseline" asks here, where dev is large,
    for more than the 95 % uncertainty of the difference: on the search's few hundred rows that margin would
    be several points, and models that beat the baseline only by the noise of dev fall below it on test."""
    floor = floor_of(config, baselines)
    if floor is None:
        return None
    if accuracy < floor:
        return f"is under the floor {floor:.4f} (budgets.min_accuracy)"
    if config.budgets.min_accuracy != "clearly_above_baseline":
        return None
    margin = difference_margin(accuracy, n, floor, n)
    if accuracy - floor > margin:
        return None
    return (f"beats the best baseline's {floor:.4f} by {accuracy - floor:.4f}, within the difference's 95 % "
            f"margin {margin:.4f} (budgets.min_accuracy: clearly_above_baseline)")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front (best_trials honours constraints), fastest first, each candidate once."""
    trials = [t for t in study.best_trials if (r := result_of(t)) is not None and r.duplicate_of is None]
    return sorted(trials, key=lambda t: result_of(t).latency_ms)


def most_accurate(trials: list[FrozenTrial]) -> FrozenTrial:
    """The trial of the highest recorded accuracy (each must carry a result)."""
    return max(trials, key=lambda t: result_of(t).accuracy)


#: at most this many ties of the front's best are scored on all of dev at export
MAX_TIES = 5


def accuracy_ties(study: optuna.Study, front: list[FrozenTrial], limit: int = MAX_TIES) -> list[FrozenTrial]:
    """Feasible trials off the front, of sub-configs (at a sequence length) the front lacks, whose accuracy
    the search cannot tell from the front's best (not clearly below it on the search's dev rows); the
    `limit` most accurate.

    A trial is scored on a few hundred dev rows, so the most accurate sub-config can fall just off the
    front behind a faster one that scored a little higher by chance."""
    best = result_of(most_accurate(front))
    if best.accuracy_n <= 0:
        return []  # no rows behind the accuracy: no uncertainty to weigh
    seen = {_model_key(t) for t in front}
    results = [(t, r) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if (r := result_of(t)) is not None and r.duplicate_of is None and r.accuracy_n > 0
               and "candidate" in t.user_attrs and _feasible(t)]
    ties = []
    for trial, result in sorted(results, key=lambda pair: -pair[1].accuracy):
        key = _model_key(trial)
        if key not in seen and not clearly_better(best.accuracy, best.accuracy_n, result.accuracy, result.accuracy_n):
            seen.add(key)
            ties.append(trial)
    return ties[:limit]


def _model_key(trial: FrozenTrial) -> str:
    """What a trial's inherited score depends on: its sub-config and sequence length."""
    candidate = trial.user_attrs.get("candidate", {})
    return json.dumps([candidate.get("arch"), candidate.get("seq_len")], sort_keys=True)


def _feasible(trial: FrozenTrial) -> bool:
    """Whether the trial met every budget (set_constraints)."""
    return all(value <= 0 for value in trial.constraints.values())


#: hypervolume reference point: accuracy 0, and latency/size at this factor of the worst observed value
REFERENCE_MARGIN = 1.1


def reference_point(study: optuna.Study, objectives: list[str]) -> list[float]:
    """Accuracy 0; latency and size at REFERENCE_MARGIN x the worst value observed (directions as the study's)."""
    values = [t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    point = []
    for i, name in enumerate(objectives):
        if OBJECTIVES[name] == "maximize":
            point.append(0.0)
        else:
            point.append(max(v[i] for v in values) * REFERENCE_MARGIN)
    return point


def losses(values: dict[str, float], objectives: list[str]) -> list[float]:
    """{"accuracy", "latency", "size"} as losses (every objective minimised), in the objectives' order."""
    return [-values[n] if OBJECTIVES[n] == "maximize" else values[n] for n in objectives]


def trial_losses(trial: FrozenTrial, objectives: list[str]) -> list[float]:
    result = result_of(trial)
    return losses({"accuracy": result.accuracy, "latency": result.latency_ms, "size": result.size_mb}, objectives)


def hypervolume(points: list[list[float]], reference: list[float]) -> float:
    """The hypervolume of loss points against a reference point in loss form (reference_point's: accuracy's 0
    is its own loss)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's own; not re-exported publicly

    ref = np.asarray(reference, float)
    inside = [p for p in points if np.all(np.asarray(p) < ref)]
    return float(compute_hypervolume(np.asarray(inside, float), ref)) if inside else 0.0


def spread_over_front(front: list[FrozenTrial], k: int, reference: list[float], objectives: list[str]) -> list[FrozenTrial]:
    """At most k trials of the front that keep the most of its hypervolume, chosen greedily (each adds the most
    to those chosen before it); in the front's order."""
    points = {t.number: trial_losses(t, objectives) for t in front}
    chosen: list[FrozenTrial] = []
    rest = list(front)
    while rest and len(chosen) < k:
        base = [points[t.number] for t in chosen]
        best = max(rest, key=lambda t: hypervolume(base + [points[t.number]], reference))
        chosen.append(best)
        rest.remove(best)
    return [t for t in front if t in chosen]
