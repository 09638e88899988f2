"""Latency and size predicted from a candidate's architecture, learnt from the study's own measurements.

One latency model per (backend, mode, threads, target) and one size model per (backend, mode):
scikit-learn's BayesianRidge, linear in the candidate's operation counts (latency: a fixed cost
plus a cost per FLOP of each kind) or parameter counts (size: bytes per parameter of each kind).
The fit is for relative error (each trial's row divided by its value), so a small model is
predicted as well as a large one and the interval scales with the prediction. Models are
refitted from the measured trials whenever asked, which on tens of trials takes milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable, Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from edgenas.runtime.backends import get_backend
from edgenas.search.study.objectives import result_of
from edgenas.types import Candidate, Family

#: the trial attribute holding what the predictor said before the candidate was measured (or pruned)
PREDICTION_ATTR = "prediction"
#: the trial attribute holding the vocabulary its artifact was built with (trimmed or not)
VOCAB_ATTR = "vocab_size"
#: the vocabulary of trials stored before they recorded one: the packaged MiniLM's
DEFAULT_VOCAB = 30522


def operation_counts(candidate: Candidate, vocab_size: int, family: Family = Family()) -> dict[str, float]:
    """Parameters and FLOPs (one sequence, multiply-adds counted twice) by kind of operation."""
    a, seq = candidate.arch, candidate.seq_len
    layers, hidden, embedding = a.num_hidden_layers, a.hidden_size, a.embedding_size
    width = a.intra_bottleneck_size if family.use_bottleneck else hidden  # the attention's and FFN's width
    projection_in = (3 * embedding if family.trigram_input else embedding) if (family.trigram_input or embedding != hidden) else 0
    attention = layers * 4 * width * width
    bottleneck = layers * (3 if family.key_query_shared_bottleneck else 2) * hidden * width if family.use_bottleneck else 0
    ffn = layers * a.num_feedforward_networks * 2 * width * a.intermediate_size
    return {
        "params_embedding_table": vocab_size * embedding,
        "params_embedding_projection": projection_in * hidden,
        "params_attention": attention + bottleneck,
        "params_ffn": ffn,
        "flops_embedding": 2 * seq * projection_in * hidden,
        "flops_attention_projections": 2 * seq * (attention + bottleneck),
        "flops_attention_scores": layers * 4 * seq * seq * width,
        "flops_ffn": 2 * seq * ffn,
        "elementwise": layers * seq * (6 * width + a.num_feedforward_networks * a.intermediate_size),
        "softmax": layers * a.num_attention_heads * seq * seq,
        "layers": layers,
        "flops_dense": 2 * seq * (projection_in * hidden + attention + bottleneck + ffn),
    }


#: the counts each model is linear in: few, so that a handful of trials pins them down (the architecture's
#: other numbers, heads, vocabulary, sequence length, enter through them)
LATENCY_COUNTS = ("flops_dense", "flops_attention_scores", "elementwise", "layers")
SIZE_COUNTS = ("params_embedding_table", "params_embedding_projection", "params_attention", "params_ffn")


@dataclass(frozen=True)
class Observation:
    """One measured candidate: what the predictor learns from."""

    candidate: Candidate
    vocab_size: int
    target: str
    median_ms: float  # one run of the artifact
    latency_ms: float  # the latency objective (QA: per question)
    size_mb: float

    @property
    def latency_key(self) -> tuple[str, str, int, str]:
        return latency_key(self.candidate, self.target)


def latency_key(candidate: Candidate, target: str) -> tuple[str, str, int, str]:
    return candidate.runtime, candidate.quantization, candidate.threads, target


def size_key(candidate: Candidate) -> tuple[str, str]:
    return candidate.runtime, candidate.quantization


def observations(trials: Iterable[FrozenTrial], vocab_size: int) -> list[Observation]:
    """The measured, original (not twin) trials as observations; `vocab_size` where a trial did not record one."""
    out = []
    for trial in trials:
        result = result_of(trial) if trial.state == TrialState.COMPLETE else None
        if result is None or result.duplicate_of is not None or "candidate" not in trial.user_attrs:
            continue
        out.append(Observation(Candidate.from_dict(trial.user_attrs["candidate"]),
                               int(trial.user_attrs.get(VOCAB_ATTR, vocab_size)), result.measurement.target or "?",
                               result.measurement.median_ms, result.latency_ms, result.size_mb))
    return out


def _knob_features(candidate: Candidate) -> list[float]:
    """One indicator per allowed value of each of the backend's knobs."""
    backend = get_backend(candidate.runtime)
    knobs = backend.own_knobs(candidate.knobs)
    return [float(knobs[k.name] == value) for k in backend.knobs for value in k.values]


def latency_features(candidate: Candidate, vocab_size: int, family: Family) -> list[float]:
    counts = operation_counts(candidate, vocab_size, family)
    return [counts[name] / 1e6 for name in LATENCY_COUNTS] + _knob_features(candidate)


def size_features(candidate: Candidate, vocab_size: int, family: Family) -> list[float]:
    counts = operation_counts(candidate, vocab_size, family)
    return [counts[name] / 1e6 for name in SIZE_COUNTS]


@dataclass(frozen=True)
class Estimate:
    """A predicted value and its interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


class RelativeFit:
    """BayesianRidge fitted for relative error: value ≈ [counts, 1]·w, each trial's row divided by its value so
    every trial weighs the same whatever its scale, and the noise the posterior estimates is relative."""

    def __init__(self, rows: Sequence[Sequence[float]], values: Sequence[float]) -> None:
        from sklearn.linear_model import BayesianRidge

        x = np.c_[np.asarray(rows, float), np.ones(len(rows))]
        y = np.asarray(values, float)
        self.scale = np.where(np.abs(x).max(axis=0) > 0, np.abs(x).max(axis=0), 1.0)
        self.model = BayesianRidge(fit_intercept=False).fit(x / self.scale / y[:, None], np.ones(len(y)))

    def estimate(self, row: Sequence[float], z: float) -> "Estimate":
        """The posterior mean and the interval of `z` standard deviations: the weights' uncertainty plus the
        relative noise at this value."""
        u = np.r_[np.asarray(row, float), 1.0] / self.scale
        value = float(u @ self.model.coef_)
        variance = float(u @ self.model.sigma_ @ u) + value ** 2 / self.model.alpha_
        spread = z * math.sqrt(max(variance, 0.0))
        return Estimate(value, max(value - spread, 0.0), value + spread)


class _LazyFits:
    """The observations grouped by key; a key's model is fitted the first time it is asked for (a trial's
    pre-screen needs one key of the many a study has)."""

    def __init__(self, observations: Sequence[Observation], key, features, target, min_trials: int) -> None:
        self.features, self.target, self.min_trials = features, target, min_trials
        self.groups: dict = {}
        for o in observations:
            self.groups.setdefault(key(o), []).append(o)
        self.fitted: dict = {}

    def get(self, key) -> RelativeFit | None:
        group = self.groups.get(key, [])
        if len(group) < self.min_trials:
            return None
        if key not in self.fitted:
            self.fitted[key] = RelativeFit([self.features(o) for o in group], [self.target(o) for o in group])
        return self.fitted[key]


class Predictor:
    """Latency (one run, per target) and size of candidates, from the observations given."""

    def __init__(self, observations: Sequence[Observation], family: Family, min_trials: int = 6,
                 interval: float = 0.9) -> None:
        self.family, self.min_trials = family, min_trials
        self.z = NormalDist().inv_cdf((1 + interval) / 2)
        self.observations = list(observations)
        self._latency = _LazyFits(self.observations, lambda o: o.latency_key,
                                  lambda o: latency_features(o.candidate, o.vocab_size, family), lambda o: o.median_ms,
                                  min_trials)
        self._size = _LazyFits(self.observations, lambda o: size_key(o.candidate),
                               lambda o: size_features(o.candidate, o.vocab_size, family), lambda o: o.size_mb, min_trials)
        # an objective per run: 1 for a classifier, the windows per question for QA (constant per sequence length)
        self._per_run = {o.candidate.seq_len: o.latency_ms / o.median_ms for o in self.observations if o.median_ms > 0}

    def latency(self, candidate: Candidate, vocab_size: int, target: str) -> Estimate | None:
        """The latency objective's estimate (QA: per question), or None when too few trials share its key."""
        model = self._latency.get(latency_key(candidate, target))
        per_run = self._per_run.get(candidate.seq_len)
        if model is None or per_run is None:
            return None
        run = model.estimate(latency_features(candidate, vocab_size, self.family), self.z)
        return Estimate(per_run * run.value, per_run * run.low, per_run * run.high)

    def size(self, candidate: Candidate, vocab_size: int) -> Estimate | None:
        """The artifact's size in MB, or None when too few trials share its backend and mode."""
        model = self._size.get(size_key(candidate))
        if model is None:
            return None
        return model.estimate(size_features(candidate, vocab_size, self.family), self.z)


@dataclass(frozen=True)
class HeldOut:
    """Predicted against measured latency for one candidate left out of its model's fit."""

    backend: str
    mode: str
    predicted_ms: float
    measured_ms: float

    @property
    def ratio(self) -> float:
        return self.predicted_ms / self.measured_ms


def held_out(observations: Sequence[Observation], family: Family, min_trials: int = 6) -> list[HeldOut]:
    """Leave-one-out: each observation predicted by a model fitted on the others of its key."""
    out = []
    for i, o in enumerate(observations):
        rest = [p for j, p in enumerate(observations) if j != i and p.latency_key == o.latency_key]
        if len(rest) < min_trials:
            continue
        estimate = Predictor(rest, family, min_trials).latency(o.candidate, o.vocab_size, o.target)
        if estimate is not None:
            out.append(HeldOut(o.candidate.runtime, o.candidate.quantization, estimate.value, o.latency_ms))
    return out


def accuracy_figures(pairs: Sequence[HeldOut]) -> dict[str, float]:
    """Share within ±10 % and ±20 % of the measured latency, and Spearman's rank correlation."""
    from scipy.stats import spearmanr

    if not pairs:
        return {"n": 0}
    errors = np.abs(np.asarray([p.ratio for p in pairs]) - 1)
    rho = spearmanr([p.predicted_ms for p in pairs], [p.measured_ms for p in pairs]).statistic if len(pairs) > 2 else float("nan")
    return {"n": len(pairs), "within_10": float(np.mean(errors <= 0.10)), "within_20": float(np.mean(errors <= 0.20)),
            "spearman": float(rho)}
