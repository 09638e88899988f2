"""Typed results: a Measurement and a TrialResult read back from the JSON that stores them, old and new."""

from __future__ import annotations

import json

import pytest

from edgenas.runtime.measurement import Measurement
from edgenas.search.study.objectives import TrialResult

#: a trial result as round two stored it in a study: flat, knobs beside the figures, parity copied out
STORED = {
    "median_ms": 4.0, "p90_ms": 4.4, "p99_ms": 5.0, "mean_ms": 4.1, "std_ms": 0.2, "min_ms": 3.9, "cv": 0.05,
    "median_ci95": 0.01, "peak_rss_mb": 150.0, "runtime": "tflite", "threads": 1, "xnnpack": True,
    "device": "box (Zen 4)", "hostname": "box", "cpu": "Zen 4", "machine": "x86_64", "cpu_count": 2,
    "python": "3.11.7", "runs": 50, "noisy": False, "warmup": 10, "seq_len": 256, "batch": 1,
    "artifact": "model.tflite", "artifact_mb": 12.0, "load_ms": 30.0, "exact_match": 0.5, "n_eval": 200,
    "windows_per_question": 1.25, "ms_per_question": 5.0, "target": "local:box", "accuracy": 0.6,
    "accuracy_n": 200, "accuracy_ci95": [0.53, 0.66], "torch_accuracy": 0.61, "size_mb": 12.5,
    "parity": {"argmax_agreement": 1.0}, "artifact_id": "abc", "artifact_sha256": "f00",
    "artifact_meta": {"sha256": "f00", "parity": {"argmax_agreement": 1.0}, "size_bytes": 12500000},
    "compile_cached": False,
}


def test_a_stored_trial_result_reads_back_typed_and_writes_the_same_record() -> None:
    result = TrialResult.from_attrs(STORED)
    m = result.measurement
    assert (m.runtime, m.knobs, m.target) == ("tflite", {"xnnpack": True}, "local:box")
    assert result.accuracy == 0.6 and result.accuracy_n == 200 and result.accuracy_ci95 == (0.53, 0.66)
    assert m.ms_per_question == pytest.approx(5.0) and result.latency_ms == pytest.approx(5.0)
    assert result.parity == {"argmax_agreement": 1.0} and result.duplicate_of is None
    assert result.to_attrs() == STORED
    assert TrialResult.from_attrs(json.loads(json.dumps(result.twin(3).to_attrs()))).duplicate_of == 3


def test_an_older_result_without_artifact_meta_keeps_its_parity_and_checksum() -> None:
    older = {k: v for k, v in STORED.items() if k not in ("artifact_meta", "hostname", "cpu", "machine", "python")}
    result = TrialResult.from_attrs(older)
    assert result.parity == {"argmax_agreement": 1.0} and result.to_attrs()["artifact_sha256"] == "f00"


def test_a_classifier_measurement_has_no_question_time_and_an_unscored_one_no_score() -> None:
    figures = {k: v for k, v in STORED.items() if k in Measurement.__dataclass_fields__}
    classifier = Measurement.from_json({**figures, "windows_per_question": None, "exact_match": None})
    assert classifier.ms_per_question is None and classifier.latency_ms == 4.0
    assert "ms_per_question" not in classifier.to_json() and "windows_per_question" not in classifier.to_json()
    unscored = Measurement.from_json({k: v for k, v in classifier.to_json().items() if k not in ("accuracy", "n_eval")})
    assert not unscored.scored and "accuracy" not in unscored.to_json()
