"""The study's last trials refine its front (`edgenas search --refine N`).

A sampler spreads its trials over the whole space and rarely steps from a good trial to the
cheaper sub-config next to it: the 40-trial study of RESULTS 1 timed a 6-layer model in TFLite
but never the same width at 4 layers, which was 1.6x faster at the same test accuracy. Each
refinement trial therefore measures one cheaper neighbour of a front trial (one architecture
choice one step down, the same runtime, mode, sequence length and knobs): the one whose estimate
adds the most hypervolume to the front. A neighbour's accuracy is estimated by its inherited
torch score on the search's dev rows plus what its parent lost or gained through its runtime,
its latency and size by its parent's measurements scaled by the predictor's (or, before the
predictor has enough trials, the operation counts') ratio of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from edgenas.config import SearchConfig
from edgenas.search.space import SearchSpace
from edgenas.search.study.objectives import (
    accuracy_floor, hypervolume, losses, pareto_trials, reference_point, result_of, trial_losses,
)
from edgenas.search.study.predictor import SIZE_COUNTS, Predictor, observations, operation_counts
from edgenas.types import Candidate

#: the operation counts a latency scales with, before the predictor has enough trials
FLOP_COUNTS = ("flops_dense", "flops_attention_scores")
#: the trial attribute naming the front trial a refinement trial stepped from, and what was estimated
REFINED_ATTR = "refined_from"


@dataclass(frozen=True)
class Step:
    """One cheaper neighbour of a front trial and its estimated objectives."""

    parent: int
    params: dict[str, Any]
    accuracy: float
    latency_ms: float
    size_mb: float
    gain: float = 0.0

    def objectives(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "latency": self.latency_ms, "size": self.size_mb}

    def to_attrs(self) -> dict[str, Any]:
        return {"trial": self.parent, "estimated": self.objectives(), "hypervolume_gain": self.gain}


def cheaper_neighbours(params: dict[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
    """The trial's parameters with one architecture choice moved one step down its list of choices."""
    out = []
    for key in space.free_keys:
        choices = list(space.choices[key])
        at = choices.index(params[key]) if params.get(key) in choices else 0
        if at > 0:
            out.append(params | {key: choices[at - 1]})
    return out


def measured_params(study: optuna.Study) -> list[dict[str, Any]]:
    """The parameters of every trial measured, running or queued (a queued trial's are its fixed ones)."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            out.append(dict(trial.system_attrs.get("fixed_params", {})))
        elif trial.state != TrialState.FAIL:
            out.append(trial.params)
    return out


class FrontRefiner:
    """Queues the refinement trial before each of the study's last `trials` trials."""

    def __init__(self, config: SearchConfig, space: SearchSpace, vocab_size: int, target: str,
                 n_trials: int, trials: int, score: Callable[[Candidate], float]) -> None:
        self.config, self.space = config, space
        self.vocab_size, self.target = vocab_size, target
        self.first = n_trials - trials  # completed trials before refinement starts
        self.score = score  # a sub-config's inherited accuracy on the search's dev rows
        self.scores: dict[tuple, float] = {}

    def __call__(self, study: optuna.Study) -> None:
        """Queue the best refinement step, once the sampler has had its trials (nothing when none is left)."""
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < self.first:
            return
        if any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            return  # a queued trial (this refiner's, or the study's start) runs first
        step = self.best_step(study)
        if step is not None:
            study.enqueue_trial(step.params, user_attrs={REFINED_ATTR: step.to_attrs()})

    def best_step(self, study: optuna.Study) -> Step | None:
        """The unmeasured cheaper neighbour of a front trial with the largest estimated hypervolume gain (None:
        none is expected to add any)."""
        front = pareto_trials(study)
        seen = measured_params(study)
        floor = accuracy_floor(study, self.config)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        predictor = Predictor(observations(completed, self.vocab_size), self.space.family)
        steps = [step for parent in front for params in cheaper_neighbours(parent.params, self.space)
                 if params not in seen and (step := self.estimate(parent, params, predictor)) is not None
                 and (floor is None or step.accuracy >= floor)]
        if not steps:
            return None
        objectives = self.config.objectives
        reference = reference_point(study, objectives)
        points = [trial_losses(t, objectives) for t in front]
        base = hypervolume(points, reference)
        gains = [hypervolume(points + [losses(s.objectives(), objectives)], reference) - base for s in steps]
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            return None  # every neighbour is expected behind the front: the sampler chooses
        return replace(steps[best], gain=float(gains[best]))

    def estimate(self, parent: FrozenTrial, params: dict[str, Any], predictor: Predictor) -> Step | None:
        """The neighbour's estimated objectives, from its parent's measurements."""
        result = result_of(parent)
        if result is None or "candidate" not in parent.user_attrs:
            return None
        before = Candidate.from_dict(parent.user_attrs["candidate"])
        after = replace(before, arch=self.space.arch(params))
        key = (after.arch, after.seq_len)
        if key not in self.scores:
            self.scores[key] = self.score(after)
        latency = self.ratio(predictor.latency(after, self.vocab_size, self.target),
                             predictor.latency(before, self.vocab_size, self.target), after, before, "latency")
        size = self.ratio(predictor.size(after, self.vocab_size), predictor.size(before, self.vocab_size),
                          after, before, "size")
        # the parent's loss (or gain) through its runtime and quantization carries over to its neighbour
        accuracy = self.scores[key] + result.accuracy - result.torch_accuracy
        return Step(parent.number, params, accuracy, result.latency_ms * latency, result.size_mb * size)

    def ratio(self, after, before, a: Candidate, b: Candidate, what: str) -> float:
        """Neighbour over parent: the predictor's where it has enough trials, else the operation counts'."""
        if after is not None and before is not None and before.value > 0:
            return after.value / before.value
        counts = [operation_counts(c, self.vocab_size, self.space.family) for c in (a, b)]
        names = FLOP_COUNTS if what == "latency" else SIZE_COUNTS
        return sum(counts[0][n] for n in names) / max(sum(counts[1][n] for n in names), 1.0)
