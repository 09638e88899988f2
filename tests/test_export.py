"""`edgenas export`: model directories that load with transformers and with every runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgenas.errors import EdgenasError
from edgenas.search.results.export import model_card, select_trials
from edgenas.search.results.report import load_study


def test_export_dir_loads_with_plain_transformers(tiny_env) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tiny_env.model_dir
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == metrics["label_names"] == ["neg", "pos"]
    batch = tokenizer(["the phone is good"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 2)
    assert metrics["finetune"]["steps"] == 2 and 0 <= metrics["torch"]["test_accuracy"] <= 1  # the recipe's finetune_steps
    assert metrics["finetune"]["lr"] == 3e-4  # and its finetune_lr
    tune = metrics["finetune"]
    better = "finetuned" if tune["dev_accuracy_finetuned"] >= tune["dev_accuracy_inherited"] else "inherited"
    assert tune["kept"] == better
    assert metrics["torch"]["dev_accuracy"] == max(tune["dev_accuracy_finetuned"], tune["dev_accuracy_inherited"])
    assert set(metrics["seconds"]) == {"data", "finetune", "torch scoring", "compile", "measure"}
    card = (model_dir / "README.md").read_text()
    for section in ("## Architecture", "## Results", "## How it was measured", "model.onnx", "model.tflite"):
        assert section in card


def test_export_artifacts_run_in_every_runtime_and_match_torch(tiny_env) -> None:
    from transformers import AutoModelForSequenceClassification

    from edgenas.runtime.backends import load_runner
    from edgenas.search.training.loop import predict_logits

    model_dir = tiny_env.model_dir
    metrics = json.loads((model_dir / "metrics.json").read_text())
    with np.load(model_dir / "data" / "dev.npz") as npz:
        arrays = {k: npz[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    reference = predict_logits(AutoModelForSequenceClassification.from_pretrained(model_dir), arrays)
    assert set(metrics["artifacts"]) == {"onnxruntime", "tflite", "executorch"}  # --other-runtimes
    for runtime, record in metrics["artifacts"].items():
        logits = load_runner(model_dir / record["file"]).predict_logits(arrays)
        np.testing.assert_allclose(logits, reference, atol=1e-3)  # fp32 in every runtime
        measured = record["measurement"]
        assert measured["runtime"] == runtime and measured["median_ms"] > 0
        assert 0 <= measured["dev_accuracy"] <= 1 and 0 <= measured["test_accuracy"] <= 1


def measured_section(metrics: dict, runtime: str, mode: str) -> str:
    """The card's "How it was measured" section for a copy of metrics with one artifact of runtime/mode."""
    one = {**metrics, "artifacts": {runtime: {**metrics["artifacts"][runtime], "mode": mode}}}
    return model_card(one).split("## How it was measured")[1].split("## Use")[0]


def test_card_lists_only_the_knobs_of_its_runtime(tiny_env) -> None:
    metrics = json.loads((tiny_env.model_dir / "metrics.json").read_text())
    onnx = measured_section(metrics, "onnxruntime", "fp32")
    assert "onnxruntime threads 1, graph_optimization all" in onnx and "xnnpack" not in onnx and "tflite" not in onnx
    tflite = measured_section(metrics, "tflite", "fp32")
    assert "tflite threads 1, xnnpack true" in tflite and "graph_optimization" not in tflite
    assert "activation ranges" not in onnx + tflite
    dynamic = measured_section(metrics, "onnxruntime", "dynamic_int8")
    assert "activation ranges per batch" in dynamic and "one text at a time (batch 1)" in dynamic


def test_trial_selection_errors_are_one_line(tiny_env) -> None:
    study, _ = load_study(tiny_env.name, tiny_env.storage)
    assert select_trials(study, "pareto")
    with pytest.raises(EdgenasError, match="expected 'pareto'"):
        select_trials(study, "best")
    with pytest.raises(EdgenasError, match="not a completed trial"):
        select_trials(study, "99")
    with pytest.raises(EdgenasError, match="no study 'nope'"):
        load_study("nope", tiny_env.storage)


def test_export_cli_without_a_study_is_a_one_line_error(tmp_path, monkeypatch, capsys) -> None:
    from edgenas.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "no study storage at edgenas-out/edgenas.db: run `edgenas search` first, or pass --from DIR" in capsys.readouterr().err
    assert not (tmp_path / "edgenas-out").exists()  # nothing created by a failed lookup


def test_report_finds_a_study_by_the_directory_search_wrote(tiny_study, tmp_path, monkeypatch, capsys) -> None:
    from edgenas.cli import main

    monkeypatch.chdir(tmp_path)  # no edgenas-out here: only --from leads to the study
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tiny_study.cache))
    main(["report", "--study", tiny_study.name, "--from", str(tiny_study.out), "--out", str(tmp_path / "rep")])
    assert (tmp_path / "rep" / "summary.md").is_file()
    assert "Pareto front of tiny" in capsys.readouterr().out


def test_exporting_the_front_checks_the_accuracy_floor_again_on_all_of_dev(tiny_env, tmp_path) -> None:
    import io

    from rich.console import Console

    from edgenas.config import Budgets
    from edgenas.runtime.targets import LocalTarget
    from edgenas.search.results.export import ExportOptions, export_trial
    from edgenas.search.study.runner import load_trained_task

    study, config = load_study(tiny_env.name, tiny_env.storage)
    floored = config.model_copy(update={"budgets": Budgets.model_construct(min_accuracy=1.01)})  # out of reach
    out = io.StringIO()
    console = Console(file=out, width=200)
    trained = load_trained_task(floored, console, progress=False)
    trial = select_trials(study, "pareto")[0]
    front = ExportOptions(tmp_path / "front", steps=0, progress=False)

    class RecordingTarget(LocalTarget):
        def measure(self, artifact, data, **kwargs):
            measured.append(Path(data).name)
            return super().measure(artifact, data, **kwargs)

    measured: list[str] = []
    assert export_trial(trial, trained, floored, front, RecordingTarget(), console) is None
    assert list((tmp_path / "front").iterdir()) == []
    assert measured and not [name for name in measured if "test" in name]  # the test split was never run
    assert "is under the floor 1.0100 (budgets.min_accuracy)" in out.getvalue()
    chosen = ExportOptions(tmp_path / "chosen", trials=str(trial.number), steps=0, progress=False)
    assert export_trial(trial, trained, floored, chosen, LocalTarget(), console).is_dir()  # asked for by number


def test_another_runtimes_build_under_the_floor_is_left_out_and_named(tiny_env, tmp_path) -> None:
    import dataclasses
    import io

    from rich.console import Console

    from edgenas.config import Budgets
    from edgenas.runtime.targets import LocalTarget
    from edgenas.search.results.export import ExportOptions, export_trial
    from edgenas.search.study.runner import load_trained_task

    study, config = load_study(tiny_env.name, tiny_env.storage)
    floored = config.model_copy(update={"budgets": Budgets.model_construct(min_accuracy=0.01)})
    console = Console(file=io.StringIO(), width=200)
    trained = load_trained_task(floored, console, progress=False)

    class TFLiteLosesEverything(LocalTarget):  # as full int8 can, where the trial's own runtime keeps accuracy
        def measure(self, artifact, data, **kwargs):
            measured = super().measure(artifact, data, **kwargs)
            return dataclasses.replace(measured, accuracy=0.0) if Path(artifact).suffix == ".tflite" else measured

    options = ExportOptions(tmp_path / "front", steps=0, other_runtime=True, progress=False)
    model_dir = export_trial(select_trials(study, "pareto")[0], trained, floored, options, TFLiteLosesEverything(),
                             console)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert "tflite" not in metrics["artifacts"] and "onnxruntime" in metrics["artifacts"]
    assert not (model_dir / "model.tflite").exists()
    assert list(metrics["not_exported"]) == ["tflite/fp32"]
    assert "under the floor 0.0100" in metrics["not_exported"]["tflite/fp32"]
    assert "Not exported, below `budgets.min_accuracy` on dev: tflite/fp32" in (model_dir / "README.md").read_text()


def test_the_front_s_accuracy_ties_are_the_feasible_trials_the_search_could_not_tell_from_its_best() -> None:
    """On 500 dev rows 0.82 cannot be told from 0.83, so a slower sub-config may be the most accurate;
    0.70 is clearly below, and a trial of a front sub-config, one over a budget or a repeat adds nothing."""
    import optuna

    from edgenas.search.study.objectives import RESULT_ATTR, accuracy_ties, pareto_trials
    from tiny_project import trial_result

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])

    def add(layers: int, accuracy: float, ms: float, mb: float, over_budget: float = 0.0, **result: object) -> int:
        trial = study.ask()
        trial.set_user_attr("candidate", {"arch": {"num_hidden_layers": layers}})
        trial.set_user_attr(RESULT_ATTR, {**trial_result(accuracy, ms, mb).to_attrs(), **result})
        trial.set_constraint("latency", over_budget)
        study.tell(trial, [accuracy, ms, mb])
        return trial.number

    add(6, 0.83, 4.0, 20.0)
    add(2, 0.75, 1.0, 5.0)
    tie = add(4, 0.82, 6.0, 23.0)
    add(3, 0.70, 5.0, 25.0)
    add(6, 0.825, 7.0, 24.0)  # the front's own sub-config, in another runtime
    add(5, 0.815, 8.0, 30.0, over_budget=1.0)
    add(1, 0.83, 9.0, 40.0, duplicate_of=0)
    less_sure = add(7, 0.80, 10.0, 50.0)
    front = pareto_trials(study)
    assert [t.number for t in front] == [1, 0]
    assert [t.number for t in accuracy_ties(study, front)] == [tie, less_sure]


@pytest.mark.parametrize("tie_scores_higher", [True, False])
def test_a_tie_that_all_of_dev_finds_more_accurate_is_exported_too(tiny_env, monkeypatch, tie_scores_higher) -> None:
    """The tiny study's front plus a trial of a shallower sub-config recorded as tying the front's best on the
    search's rows: it is exported too exactly when its inherited score on all of dev is the higher, and its
    card says why it was chosen."""
    import io

    import optuna
    from rich.console import Console

    from edgenas.search.results import export
    from edgenas.search.study.objectives import RESULT_ATTR, pareto_trials, result_of
    from edgenas.search.study.runner import load_trained_task
    from edgenas.types import Candidate

    stored, config = load_study(tiny_env.name, tiny_env.storage)
    study = optuna.create_study(directions=stored.directions)
    for trial in stored.trials:
        study.add_trial(trial)
    front = pareto_trials(study)
    best = max(front, key=lambda t: result_of(t).accuracy)
    candidate = Candidate.from_dict(best.user_attrs["candidate"])
    assert candidate.arch.num_hidden_layers > 1  # a shallower sub-config is another one of the supernet
    tie_arch = candidate.arch.to_dict() | {"num_hidden_layers": candidate.arch.num_hidden_layers - 1}
    result = result_of(best)
    study.add_trial(optuna.trial.create_trial(
        params=best.params, distributions=best.distributions,
        values=[result.accuracy, result.latency_ms * 2, result.size_mb * 2],
        user_attrs={"candidate": candidate.to_dict() | {"arch": tie_arch}, RESULT_ATTR: best.user_attrs[RESULT_ATTR]}))
    tie = study.trials[-1].number

    def scored(model, dev):  # what all of dev says of each sub-config, set by the test
        is_tie = all(getattr(model.config, knob) == value for knob, value in tie_arch.items())
        return {"accuracy": 0.9 if is_tie == tie_scores_higher else 0.5}

    monkeypatch.setattr(export, "torch_scores", scored)
    trained = load_trained_task(config, Console(file=io.StringIO()), progress=False)
    out = io.StringIO()
    why = export.more_accurate_tie(study, front, trained, config, export.ExportOptions(tiny_env.root / "unused"),
                                   Console(file=out))
    line = " ".join(out.getvalue().split())
    assert str(tie) in line.split("dev rows: trials ")[1].split(";")[0].split(", ")  # it was weighed
    if not tie_scores_higher:
        assert why == {}
        return
    assert list(why) == [tie] and "off the Pareto front, a tie of trial" in why[tie]
    metrics = json.loads((tiny_env.model_dir / "metrics.json").read_text()) | {"selected_as": why[tie]}
    assert f"({why[tie]})" in model_card(metrics)
