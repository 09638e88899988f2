"""The pre-screen: a sampled candidate is not compiled when its predicted latency and size put it
clearly behind the study's current front, at the accuracy the supernet gives it.

Clearly behind: a measured trial is at least as accurate as this candidate's torch score (an
artifact rarely beats its own torch model) and faster and smaller than even the low ends of the
candidate's predicted intervals; or the low end alone breaks a budget; or the torch score is under
`budgets.min_accuracy` (this needs no prediction, so it applies from the first trial). Such a trial ends in
Optuna's own pruned state with the prediction beside it. A fixed share of candidates is measured
whatever the prediction, so the predictor keeps meeting candidates it would have pruned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.search.study.objectives import accuracy_floor, result_of
from edgenas.search.study.predictor import PREDICTION_ATTR, Estimate, Observation, Predictor, observations
from edgenas.types import Candidate, Family


@dataclass(frozen=True)
class Prescreen:
    """What a study's trials share for the pre-screen: its settings and the observations of a stored study it
    starts from (`prescreen.from_study`)."""

    config: SearchConfig
    family: Family
    vocab_size: int
    target: str
    inherited: tuple[Observation, ...] = ()

    @classmethod
    def for_study(cls, config: SearchConfig, family: Family, vocab_size: int, target: str,
                  storage: optuna.storages.BaseStorage | str | None) -> "Prescreen | None":
        """The pre-screen of a study (None when switched off), with the stored study's observations on this target."""
        settings = config.prescreen
        if not settings.enabled:
            return None
        inherited: list[Observation] = []
        if settings.from_study:
            try:
                source = optuna.load_study(study_name=settings.from_study, storage=storage)
            except KeyError:
                raise EdgenasError(f"prescreen.from_study: no study '{settings.from_study}' in this storage") from None
            inherited = [o for o in observations(source.get_trials(deepcopy=False), vocab_size) if o.target == target]
        return cls(config, family, vocab_size, target, tuple(inherited))

    def check(self, trial: optuna.Trial, candidate: Candidate, torch_accuracy: float) -> None:
        """Record the prediction; raise optuna.TrialPruned when the candidate is clearly behind the front."""
        settings = self.config.prescreen
        trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        predictor = Predictor([*self.inherited, *observations(trials, self.vocab_size)], self.family,
                              settings.min_trials, settings.interval)
        latency = predictor.latency(candidate, self.vocab_size, self.target)
        size = predictor.size(candidate, self.vocab_size)
        predicted = latency is not None and size is not None
        audit = random.Random(trial.number).random() < settings.measure_share
        reason = None
        if not audit:
            reason = self.under_floor(trial.study, torch_accuracy)
            if reason is None and predicted:
                reason = self.behind(trial.study.best_trials, torch_accuracy, latency, size)
        if not predicted and reason is None:
            return
        record = {"latency_ms": latency.to_json(), "size_mb": size.to_json()} if predicted else {}
        trial.set_user_attr(PREDICTION_ATTR, {**record, "accuracy": torch_accuracy, "pruned": reason is not None,
                                              "audit": audit, **({"reason": reason} if reason else {})})
        if reason is not None:
            raise optuna.TrialPruned(reason)

    def under_floor(self, study: optuna.Study, accuracy: float) -> str | None:
        """Why the candidate's torch score already misses `budgets.min_accuracy` (no prediction needed)."""
        floor = accuracy_floor(study, self.config)
        if floor is None or accuracy >= floor:
            return None
        return f"torch score {accuracy:.3f} under the accuracy floor {floor:.3f}"

    def behind(self, front: list[FrozenTrial], accuracy: float, latency: Estimate, size: Estimate) -> str | None:
        """Why the candidate cannot join the feasible front (None: it might)."""
        budgets, objectives = self.config.budgets, self.config.objectives
        if budgets.max_latency_ms is not None and latency.low > budgets.max_latency_ms:
            return f"predicted at least {latency.low:.2f} ms, over the {budgets.max_latency_ms} ms budget"
        if budgets.max_size_mb is not None and size.low > budgets.max_size_mb:
            return f"predicted at least {size.low:.1f} MB, over the {budgets.max_size_mb} MB budget"
        for past in front:
            result = result_of(past)
            if result is None:
                continue
            if (("accuracy" not in objectives or result.accuracy >= accuracy)
                    and ("latency" not in objectives or result.latency_ms < latency.low)
                    and ("size" not in objectives or result.size_mb < size.low)):
                return (f"behind #{past.number}: predicted {latency.value:.2f} ms ({latency.low:.2f}-{latency.high:.2f}),"
                        f" {size.value:.1f} MB, torch score {accuracy:.3f}")
        return None
