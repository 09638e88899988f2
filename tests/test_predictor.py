"""The latency predictor and the pre-screen: fitted from measured trials, pruning only what is clearly
behind the front, recorded in Optuna's pruned state, shown by the report."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.search.study.objectives import RESULT_ATTR, objective_values
from edgenas.search.study.predictor import (PREDICTION_ATTR, VOCAB_ATTR, Observation, Predictor, accuracy_figures,
                                            held_out, observations, operation_counts)
from edgenas.search.study.prescreen import Prescreen
from edgenas.search.study.verdict import BASELINES_ATTR
from edgenas.types import ArchConfig, Candidate, Family
from tiny_project import trial_result

BERT = Family(use_bottleneck=False, normalization_type="layer_norm", trigram_input=False, hidden_act="gelu")
VOCAB = 1000


def arch(layers: int, hidden: int, intermediate: int) -> ArchConfig:
    return ArchConfig(layers, hidden, hidden, hidden // 32, 1, intermediate, hidden)


def true_latency_ms(candidate: Candidate) -> float:
    """A made-up but smooth device: a fixed cost plus time per FLOP."""
    counts = operation_counts(candidate, VOCAB, BERT)
    flops = sum(v for k, v in counts.items() if k.startswith("flops"))
    return 0.2 + flops * 2e-9


def true_size_mb(candidate: Candidate) -> float:
    counts = operation_counts(candidate, VOCAB, BERT)
    return 0.05 + sum(v for k, v in counts.items() if k.startswith("params")) * 4 / 1e6


GRID = [Candidate(arch(layers, hidden, inter), "onnxruntime", "fp32", seq_len=64)
        for layers, hidden, inter in itertools.product((1, 2, 3, 4, 6), (128, 256, 384), (512, 1536))]


def observed(candidate: Candidate) -> Observation:
    latency = true_latency_ms(candidate)
    return Observation(candidate, VOCAB, "local:test", latency, latency, true_size_mb(candidate))


def test_operation_counts_follow_the_architecture() -> None:
    small, deep = operation_counts(GRID[0], VOCAB, BERT), operation_counts(Candidate(arch(2, 128, 512), seq_len=64), VOCAB, BERT)
    assert deep["flops_ffn"] == 2 * small["flops_ffn"] and deep["params_attention"] == 2 * small["params_attention"]
    assert small["params_embedding_table"] == VOCAB * 128 and small["params_embedding_projection"] == 0  # E == H, no trigram
    longer = operation_counts(Candidate(arch(1, 128, 512), seq_len=128), VOCAB, BERT)
    assert longer["flops_attention_scores"] == 4 * small["flops_attention_scores"]  # quadratic in the sequence


def test_the_predictor_learns_a_device_and_brackets_what_it_has_not_seen() -> None:
    train, test = GRID[::2], GRID[1::2]
    predictor = Predictor([observed(c) for c in train], BERT, min_trials=6)
    for candidate in test:
        latency = predictor.latency(candidate, VOCAB, "local:test")
        size = predictor.size(candidate, VOCAB)
        assert latency is not None and size is not None
        assert latency.low < latency.value < latency.high and size.low <= size.value < size.high
        assert abs(latency.value / true_latency_ms(candidate) - 1) < 0.2, candidate.arch
        assert abs(size.value / true_size_mb(candidate) - 1) < 0.1, candidate.arch
    figures = accuracy_figures(held_out([observed(c) for c in GRID], BERT, min_trials=6))
    assert figures["n"] == len(GRID) and figures["within_20"] >= 0.9 and figures["spearman"] > 0.95


def test_no_prediction_before_enough_trials_of_the_same_backend_mode_threads_and_target() -> None:
    predictor = Predictor([observed(c) for c in GRID[:5]], BERT, min_trials=6)
    assert predictor.latency(GRID[6], VOCAB, "local:test") is None
    predictor = Predictor([observed(c) for c in GRID[:8]], BERT, min_trials=6)
    assert predictor.latency(GRID[9], VOCAB, "local:test") is not None
    assert predictor.latency(GRID[9], VOCAB, "pi@raspberrypi") is None  # another device
    assert predictor.latency(Candidate(GRID[9].arch, "tflite", "fp32", seq_len=64), VOCAB, "local:test") is None
    assert predictor.latency(Candidate(GRID[9].arch, "onnxruntime", "fp32", 64, threads=2), VOCAB, "local:test") is None


def measured_study(config: SearchConfig, candidates: list[Candidate], accuracy: float = 0.8) -> optuna.Study:
    """An in-memory study whose trials measured `candidates` on the made-up device."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for candidate in candidates:
        trial = study.ask()
        result = trial_result(accuracy, true_latency_ms(candidate), true_size_mb(candidate), target="local:test")
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr(VOCAB_ATTR, VOCAB)
        trial.set_user_attr(RESULT_ATTR, result.to_attrs())
        study.tell(trial, objective_values(config, result))
    return study


def screen(config: SearchConfig, study: optuna.Study, candidate: Candidate, torch_accuracy: float) -> optuna.Trial:
    trial = study.ask()
    Prescreen(config, BERT, VOCAB, "local:test").check(trial, candidate, torch_accuracy)
    return trial


def prescreen_config(**settings: object) -> SearchConfig:
    return SearchConfig.model_validate({"prescreen": {"enabled": True, "min_trials": 6, "measure_share": 0.0, **settings}})


def test_a_candidate_clearly_behind_the_front_is_pruned_with_its_prediction() -> None:
    config = prescreen_config()
    study = measured_study(config, GRID[:12])
    big = Candidate(arch(6, 384, 1536), "onnxruntime", "fp32", seq_len=64)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="behind #"):
        Prescreen(config, BERT, VOCAB, "local:test").check(trial, big, torch_accuracy=0.5)
    study.tell(trial, state=TrialState.PRUNED)
    pruned = study.trials[-1]
    assert pruned.state == TrialState.PRUNED
    prediction = pruned.user_attrs[PREDICTION_ATTR]
    assert prediction["pruned"] and prediction["latency_ms"]["low"] > min(t.values[1] for t in study.best_trials)


def test_a_candidate_that_may_join_the_front_is_measured() -> None:
    config = prescreen_config()
    study = measured_study(config, GRID[:12])
    big = Candidate(arch(6, 384, 1536), "onnxruntime", "fp32", seq_len=64)
    trial = screen(config, study, big, torch_accuracy=0.95)  # more accurate than anything measured
    assert trial.user_attrs[PREDICTION_ATTR]["pruned"] is False
    fast = Candidate(arch(1, 64, 256), "onnxruntime", "fp32", seq_len=64)  # faster than anything measured
    assert screen(config, study, fast, torch_accuracy=0.5).user_attrs[PREDICTION_ATTR]["pruned"] is False


def test_the_audit_share_is_measured_whatever_the_prediction_and_a_budget_prunes() -> None:
    config = prescreen_config(measure_share=1.0)
    study = measured_study(config, GRID[:12])
    big = Candidate(arch(6, 384, 1536), "onnxruntime", "fp32", seq_len=64)
    prediction = screen(config, study, big, torch_accuracy=0.5).user_attrs[PREDICTION_ATTR]
    assert prediction["audit"] and not prediction["pruned"]
    budgeted = prescreen_config()
    budgeted = budgeted.model_copy(update={"budgets": budgeted.budgets.model_copy(update={"max_latency_ms": 0.3})})
    with pytest.raises(optuna.TrialPruned, match="over the 0.3 ms budget"):
        screen(budgeted, measured_study(budgeted, GRID[:12]), big, torch_accuracy=0.99)


def test_a_candidate_under_the_accuracy_floor_is_pruned_before_any_prediction() -> None:
    config = SearchConfig.model_validate({"prescreen": {"enabled": True, "measure_share": 0.0},
                                          "budgets": {"min_accuracy": "baseline"}})
    study = measured_study(config, [])  # nothing measured yet: the predictor cannot predict
    study.set_user_attr(BASELINES_ATTR, {"n_dev": 500, "n_test": 0, "majority": {"dev": 0.43, "test": 0.4},
                                         "tfidf": {"dev": 0.766, "test": 0.768}})
    small = Candidate(arch(1, 64, 256), "onnxruntime", "fp32", seq_len=64)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="torch score 0.740 under the accuracy floor 0.766"):
        Prescreen(config, BERT, VOCAB, "local:test").check(trial, small, torch_accuracy=0.74)
    assert trial.user_attrs[PREDICTION_ATTR] == {"accuracy": 0.74, "pruned": True, "audit": False,
                                                 "reason": "torch score 0.740 under the accuracy floor 0.766"}
    above = screen(config, study, small, torch_accuracy=0.78)
    assert PREDICTION_ATTR not in above.user_attrs  # measured; no prediction to record yet


def test_a_stored_study_on_the_same_target_seeds_the_predictor(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = prescreen_config(from_study="earlier")
    earlier = optuna.create_study(study_name="earlier", storage=storage, directions=["maximize", "minimize", "minimize"])
    for trial in measured_study(config, GRID[:12]).trials:
        earlier.add_trial(trial)
    screen_ = Prescreen.for_study(config, BERT, VOCAB, "local:test", storage)
    assert screen_ is not None and len(screen_.inherited) == 12
    assert Prescreen.for_study(config, BERT, VOCAB, "pi@raspberrypi", storage).inherited == ()
    assert Prescreen.for_study(prescreen_config(enabled=False), BERT, VOCAB, "local:test", storage) is None
    study = measured_study(config, GRID[:1])  # alone, too few trials for a prediction
    trial = study.ask()
    screen_.check(trial, GRID[20], torch_accuracy=0.9)
    assert PREDICTION_ATTR in trial.user_attrs  # the stored study's 12 trials made one
    with pytest.raises(EdgenasError, match="no study .missing."):
        Prescreen.for_study(prescreen_config(from_study="missing"), BERT, VOCAB, "local:test", storage)


def test_observations_skip_twins_failures_and_unmeasured_trials() -> None:
    config = prescreen_config()
    study = measured_study(config, GRID[:3])
    twin = study.ask()
    result = trial_result(0.8, 1.0, 1.0, target="local:test").twin(0)
    twin.set_user_attr("candidate", GRID[0].to_dict())
    twin.set_user_attr(RESULT_ATTR, result.to_attrs())
    study.tell(twin, objective_values(config, result))
    study.tell(study.ask(), state=TrialState.FAIL)
    found = observations(study.trials, VOCAB)
    assert len(found) == 3 and all(math.isclose(o.median_ms, true_latency_ms(o.candidate)) for o in found)


def test_a_search_with_the_prescreen_records_predictions_and_counts_pruned_trials(
        tmp_path: Path, isolated_cache: Path) -> None:
    import io

    import yaml
    from rich.console import Console

    from edgenas.config import load_config
    from edgenas.search.results.report import write_report
    from edgenas.search.study.runner import SearchOptions, run_search
    from tiny_project import make_tiny_project

    path = make_tiny_project(tmp_path / "project", runtimes={"onnxruntime": ["fp32"]})
    raw = yaml.safe_load(path.read_text())
    raw["prescreen"] = {"enabled": True, "min_trials": 3, "measure_share": 0.0}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    out = io.StringIO()
    study = run_search(config, SearchOptions(out_dir=tmp_path / "out", study_name="screened", n_trials=7,
                                             sampler="random", seed=1, progress=False), Console(file=out, width=200))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 7
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs[RESULT_ATTR]]
    predicted = [t for t in study.trials if PREDICTION_ATTR in t.user_attrs]
    assert len(measured) >= 3 and predicted, out.getvalue()  # the predictor spoke once three trials were measured
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs[PREDICTION_ATTR]["pruned"] and "compile" not in trial.user_attrs["phases"]
            assert f"#{trial.number:<3}" in out.getvalue() and "not compiled: behind #" in out.getvalue()
    report = write_report(study, config, tmp_path / "report")
    if len(measured) >= 4:
        assert report.predictor["all"]["n"] >= 1 and (tmp_path / "report" / "predictor.png").is_file()
        assert "Latency predictor on held-out trials" in (tmp_path / "report" / "summary.md").read_text()
