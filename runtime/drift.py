"""Drift control: time a fixed reference artifact now and then, and attach it to every result."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from .measurement import Measurement
from .targets import Target


class DriftMonitor:
    """Wraps a target; measures `reference` first and every `every` measurements after.

    Each result gains reference_median_ms (latest reference), reference_baseline_ms
    (the first one), drift (= latest / baseline - 1) and drifting (|drift| > tolerance),
    so later comparisons can normalise latencies or flag a machine whose speed moved.
    """

    def __init__(self, target: Target, reference: Path, data: Path | None = None, every: int = 10,
                 tolerance: float = 0.1, reference_knobs: dict[str, Any] | None = None) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.target, self.reference, self.data, self.every = target, Path(reference), data, every
        self.name = target.name
        self.tolerance = tolerance
        self.reference_knobs = {"threads": 1, "runs": 30, "warmup": 5, **(reference_knobs or {})}
        self.baseline_ms: float | None = None
        self.latest_ms: float | None = None
        self.history: list[dict[str, float]] = []  # (time, reference median) pairs, oldest first
        self._since_reference = 0  # measurements since the reference was last timed

    def check_reference(self) -> float:
        """Measure the reference now; the first call sets the baseline. Returns its median ms."""
        result = self.target.measure(self.reference, self.data, **self.reference_knobs)
        self.latest_ms = result.median_ms
        if self.baseline_ms is None:
            self.baseline_ms = self.latest_ms
        self.history.append({"time": time.time(), "median_ms": self.latest_ms})
        self._since_reference = 0
        return self.latest_ms

    @property
    def drift(self) -> float:
        """Latest reference latency relative to the baseline, minus one (0.0 before any check)."""
        if not self.baseline_ms or self.latest_ms is None:
            return 0.0
        return self.latest_ms / self.baseline_ms - 1

    def measure(self, artifact: Path, data: Path | None = None, **knobs: Any) -> Measurement:
        """Measure on the wrapped target, re-timing the reference when due, and add the drift fields."""
        # due before the first measurement and every `every` after; an explicit check resets the count
        if self.latest_ms is None or self._since_reference >= self.every:
            self.check_reference()
        self._since_reference += 1
        result = self.target.measure(artifact, data, **knobs)
        return dataclasses.replace(result, reference_median_ms=self.latest_ms, reference_baseline_ms=self.baseline_ms,
                                   drift=self.drift, drifting=abs(self.drift) > self.tolerance)
