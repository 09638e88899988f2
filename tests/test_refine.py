"""Choices by hypervolume: the study's last trials refine its front, each measuring the cheaper neighbour
that adds the most estimated hypervolume (search/study/refine.py), and an export of at most N models keeps
those that hold the most of the front's."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from edgenas.config import SearchConfig
from edgenas.search.space import load_space
from edgenas.search.study.objectives import RESULT_ATTR, objective_values, spread_over_front
from edgenas.search.study.predictor import VOCAB_ATTR, operation_counts
from edgenas.search.study.refine import REFINED_ATTR, FrontRefiner, cheaper_neighbours
from edgenas.types import Candidate
from tiny_project import trial_result

SPACE = load_space("minilm")
VOCAB = 1000
CONFIG = SearchConfig.model_validate({"budgets": {"min_accuracy": 0.75}})


def params_of(layers: int, hidden: int, intermediate: int, embedding: int = 384) -> dict:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_feedforward_networks": 1,
            "intermediate_size": intermediate, "embedding_size": embedding, "runtime": "tflite",
            "quantization_tflite": "dynamic_int8", "seq_len": 64, "threads": 1}


def candidate_of(params: dict) -> Candidate:
    return Candidate(SPACE.arch(params), params["runtime"], params["quantization_tflite"], params["seq_len"])


def latency_of(candidate: Candidate) -> float:
    """A made-up device: time per dense FLOP and attention score."""
    counts = operation_counts(candidate, VOCAB, SPACE.family)
    return 0.1 + (counts["flops_dense"] + counts["flops_attention_scores"]) * 1e-9


def inherited(candidate: Candidate) -> float:
    """A made-up supernet: a layer fewer costs half a point, a narrower hidden or FFN three."""
    a = candidate.arch
    return (0.82 - 0.005 * (6 - a.num_hidden_layers) - 0.03 * (384 - a.hidden_size) / 64
            - 0.03 * (1536 - a.intermediate_size) / 384 - 0.001 * (384 - a.embedding_size) / 128)


def add_measured(study: optuna.Study, params: dict, accuracy: float | None = None) -> int:
    """A completed trial of these parameters, measured on the made-up device."""
    candidate = candidate_of(params)
    result = trial_result(inherited(candidate) if accuracy is None else accuracy, latency_of(candidate),
                          size_mb=candidate.arch.num_hidden_layers * 1.0, target="local:test")
    distributions = {k: CategoricalDistribution([v]) for k, v in params.items()}
    study.add_trial(create_trial(params=params, distributions=distributions, values=objective_values(CONFIG, result),
                                 user_attrs={"candidate": candidate.to_dict(), VOCAB_ATTR: VOCAB,
                                             RESULT_ATTR: result.to_attrs()}))
    return study.trials[-1].number


def refiner(n_trials: int = 10, trials: int = 5) -> tuple[FrontRefiner, list]:
    scored = []

    def score(candidate: Candidate) -> float:
        scored.append(candidate.arch)
        return inherited(candidate)

    return FrontRefiner(CONFIG, SPACE, VOCAB, "local:test", n_trials, trials, score), scored


def test_cheaper_neighbours_step_one_choice_down() -> None:
    found = cheaper_neighbours(params_of(6, 384, 768, 64), SPACE)
    assert [{k: v for k, v in p.items() if p[k] != params_of(6, 384, 768, 64)[k]} for p in found] == [
        {"num_hidden_layers": 5}, {"hidden_size": 320}, {"intermediate_size": 384}]  # embedding 64 is the least
    assert cheaper_neighbours(params_of(1, 192, 384, 64), SPACE) == []


def test_the_step_that_adds_most_hypervolume_is_chosen_and_each_neighbour_is_scored_once() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    top = add_measured(study, params_of(6, 384, 1536))
    add_measured(study, params_of(2, 192, 384), accuracy=0.76)  # on the front; its neighbours fall under the floor
    refine, scored = refiner()
    step = refine.best_step(study)
    # a layer fewer keeps the most accuracy for its saving on this supernet
    assert step is not None and step.parent == top and step.params == params_of(5, 384, 1536) and step.gain > 0
    assert step.latency_ms < latency_of(candidate_of(params_of(6, 384, 1536)))
    add_measured(study, step.params)
    again = refine.best_step(study)
    assert again is not None and again.params not in (step.params, params_of(6, 384, 1536))
    assert len(scored) == len(set(scored))  # the scores are kept: a sub-config is scored once


def test_refinement_waits_for_the_samplers_trials_and_then_queues_its_step() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    add_measured(study, params_of(6, 384, 768))
    refine, _ = refiner(n_trials=4, trials=2)
    refine(study)
    assert not [t for t in study.trials if t.state == TrialState.WAITING]  # 1 of the sampler's 2 trials done
    add_measured(study, params_of(6, 384, 1536))
    refine(study)
    refine(study)  # a queued step runs before another is chosen
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs[REFINED_ATTR]["trial"] in (0, 1)
    assert waiting[0].system_attrs["fixed_params"] in cheaper_neighbours(params_of(6, 384, 768), SPACE) + \
        cheaper_neighbours(params_of(6, 384, 1536), SPACE)


def test_no_step_when_every_neighbour_is_measured_or_under_the_floor() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    add_measured(study, params_of(1, 192, 768, 64), accuracy=0.76)
    add_measured(study, params_of(1, 192, 384, 64), accuracy=0.70)  # measured, and under the floor
    assert refiner()[0].best_step(study) is None


def test_a_search_with_refinement_spends_its_last_trials_on_cheaper_neighbours(
        tmp_path: Path, isolated_cache: Path) -> None:
    import io

    from rich.console import Console

    from edgenas.config import load_config
    from edgenas.search.study.runner import SearchOptions, run_search
    from tiny_project import make_tiny_project

    config = load_config(make_tiny_project(tmp_path / "project", runtimes={"onnxruntime": ["fp32"]}))
    out = io.StringIO()
    study = run_search(config, SearchOptions(out_dir=tmp_path / "out", study_name="refined", n_trials=6, refine=3,
                                             sampler="random", seed=1), Console(file=out, width=200))
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    refined = [t for t in completed if REFINED_ATTR in t.user_attrs]
    assert len(completed) == 6 and refined and all(t.number >= 3 for t in refined)
    space = load_space(config.space)
    for trial in refined:
        parent = study.trials[trial.user_attrs[REFINED_ATTR]["trial"]]
        assert trial.params in cheaper_neighbours(parent.params, space)
        assert f"(from #{parent.number})" in out.getvalue()  # the progress line names the parent


def test_an_export_of_at_most_n_models_leaves_out_the_near_twin() -> None:
    config = SearchConfig.model_validate({"objectives": ["accuracy", "latency"]})
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, ms in ((0.70, 0.5), (0.789, 1.95), (0.79, 2.0), (0.80, 10.0)):  # fastest first
        result = trial_result(accuracy, ms)
        study.add_trial(create_trial(values=objective_values(config, result), user_attrs={RESULT_ATTR: result.to_attrs()}))
    front = study.trials
    reference = [0.0, 11.0]
    assert spread_over_front(front, 3, reference, config.objectives) == [front[0], front[2], front[3]]
    assert spread_over_front(front, 1, reference, config.objectives) == [front[0]]  # the most area alone
    assert spread_over_front(front, 9, reference, config.objectives) == front


def test_refining_every_trial_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    """--refine must leave the sampler some trials to build a front from; nothing is created otherwise."""
    import pytest

    from edgenas.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["search", "--n-trials", "3", "--refine", "3", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "--refine 3" in err
    assert not (tmp_path / "out").exists()
