"""A measurement's record: one artifact timed (and scored) on one device.

`measure()` returns one, the measuring child prints it as one JSON object, a target reads it
back. Its JSON is flat (every field a key, the runtime knobs beside them), the shape results
have been stored in since the first study, so older studies and metrics.json files still load.

Standard library only: it ships to the device with the runners.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """What a device measured: the latency of batch-1 runs, the process, the device, and the scores
    of a scored set when one was given (None otherwise)."""

    # latency of the timed runs, in ms
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    cv: float  # std / mean
    median_ci95: float | None  # relative 95 % half-width of the median; None: too few runs to tell
    runs: int
    warmup: int
    noisy: bool  # the median stayed uncertain beyond the noise limit
    # how it ran
    runtime: str
    threads: int
    seq_len: int
    batch: int
    artifact: str  # the artifact's file name
    artifact_mb: float
    load_ms: float
    peak_rss_mb: float
    # who measured
    device: str
    hostname: str
    cpu: str
    machine: str
    cpu_count: int | None
    python: str
    knobs: dict[str, Any] = field(default_factory=dict)  # the runtime's own knobs it ran with
    # the scored set's scores (task.score): "accuracy" is the task's score (QA: F1 as a fraction)
    accuracy: float | None = None
    n_eval: int | None = None  # examples scored (QA: questions)
    exact_match: float | None = None  # QA
    windows_per_question: float | None = None  # QA: a long context is several runs of the model
    logits: list[Any] | None = None  # the scored rows' logits, when asked for
    # added by the caller's side
    target: str | None = None  # the target that measured, by name
    reference_median_ms: float | None = None  # drift control: the reference artifact's latest median
    reference_baseline_ms: float | None = None  # ... and its first
    drift: float | None = None  # latest / first - 1
    drifting: bool | None = None  # |drift| beyond the monitor's tolerance

    @property
    def ms_per_question(self) -> float | None:
        """QA: the time to answer a question, all the windows of its context."""
        return None if self.windows_per_question is None else self.median_ms * self.windows_per_question

    @property
    def latency_ms(self) -> float:
        """The latency a candidate is judged by: a question's time for QA, else the median run."""
        per_question = self.ms_per_question
        return self.median_ms if per_question is None else per_question

    @property
    def scored(self) -> bool:
        return self.accuracy is not None

    def with_scores(self, scores: dict[str, Any]) -> "Measurement":
        """This measurement with a task's scores (task.score's keys) added."""
        return dataclasses.replace(self, **{k: v for k, v in scores.items() if k in _FIELDS})

    def to_json(self) -> dict[str, Any]:
        """A flat JSON object: the fields that are set, the knobs beside them, ms_per_question for QA."""
        doc = {f: getattr(self, f) for f in _FIELDS if f != "knobs"}
        doc = {k: v for k, v in doc.items() if v is not None or k in _ALWAYS}
        if self.ms_per_question is not None:
            doc["ms_per_question"] = self.ms_per_question
        return {**doc, **self.knobs}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Measurement":
        """Read a flat JSON object back; the keys it does not declare are the runtime's knobs."""
        known = {k: v for k, v in doc.items() if k in _FIELDS and k != "knobs"}
        knobs = {k: v for k, v in doc.items() if k not in _FIELDS and k not in _DERIVED}
        known.setdefault("batch", 1)
        for name in ("hostname", "cpu", "machine", "python"):
            known.setdefault(name, "")
        known.setdefault("cpu_count", None)
        known.setdefault("device", known.get("hostname", ""))
        return cls(**known, knobs={**knobs, **(doc.get("knobs") or {})})


_FIELDS = frozenset(f.name for f in dataclasses.fields(Measurement))
_ALWAYS = frozenset({"median_ci95", "cpu_count"})  # written as null rather than left out
_DERIVED = frozenset({"ms_per_question"})  # computed from the fields, not read back
