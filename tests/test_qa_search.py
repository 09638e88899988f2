"""Extractive QA end to end on a tiny SQuAD-format project: train, search, score on answer spans."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from edgenas.config import ConfigError, SearchConfig, load_config
from edgenas.runtime.measure import measure, score_logits
from edgenas.search.data import qa as qa_data
from edgenas.search.study.objectives import RESULT_ATTR
from edgenas.search.study.runner import SearchOptions, run_search
from tiny_project import make_tiny_qa_project


def test_a_qa_search_scores_every_trial_on_answer_spans(tmp_path: Path, isolated_cache: Path) -> None:
    config = load_config(make_tiny_qa_project(tmp_path / "project"))
    assert config.task.record.spans
    options = SearchOptions(out_dir=tmp_path / "out", study_name="qa", n_trials=3, progress=False)
    out = io.StringIO()
    study = run_search(config, options, Console(file=out, width=120))
    results = [t.user_attrs[RESULT_ATTR] for t in study.trials if RESULT_ATTR in t.user_attrs]
    assert len(results) == 3
    for result in results:
        assert 0.0 <= result["exact_match"] <= result["accuracy"] <= 1.0  # F1 is at least EM
        assert result["accuracy_n"] == 10  # the dev article's questions, not its 20 windows
        # 25 context tokens, 16 fit beside the question, 8 shared: windows at tokens 0, 8 and 16
        assert result["windows_per_question"] == 3.0
        assert result["ms_per_question"] == pytest.approx(3 * result["median_ms"])
        assert result["artifact_meta"]["outputs"][0]["name"] == "logits"
    assert "Pareto front of qa" in out.getvalue() and " ms/q) | " in out.getvalue()  # trial lines: per question too
    # majority class and TF-IDF are a classifier's baselines; QA has a lexical one
    assert "sliding-window lexical baseline" in out.getvalue() and "TF-IDF" not in out.getvalue()


def test_the_measurement_scores_the_spans_of_its_own_logits(tmp_path: Path, isolated_cache: Path) -> None:
    """measure's F1 is the official one on the artifact's logits: checked against a direct decode."""
    from edgenas.runtime.backends import load_runner
    from edgenas.runtime.qa import best_spans, squad_scores, windows_of
    from edgenas.search.study.trial import load_npz

    config = load_config(make_tiny_qa_project(tmp_path / "project"))
    study = run_search(config, SearchOptions(out_dir=tmp_path / "out", study_name="qa", n_trials=1, progress=False),
                       Console(file=io.StringIO()))
    eval_set = next((tmp_path / "out").rglob("eval-24.npz"))
    artifact = next(path for path in isolated_cache.rglob("model.onnx")
                    if json.loads((path.parent / "meta.json").read_text())["seq_len"] == 24)  # not the reference
    measured = measure(artifact, eval_set, runs=3, warmup=0, logits=True)
    arrays = load_npz(eval_set)
    logits = np.asarray(measured.logits, dtype=np.float32)
    assert logits.shape == (len(arrays["input_ids"]), 2, 24)

    answers = best_spans(logits[:, 0], logits[:, 1], windows_of(arrays), json.loads(arrays["contexts"].item()))
    official = squad_scores([a.text for a in answers], json.loads(arrays["answers"].item()))
    assert measured.accuracy == pytest.approx(official["f1"] / 100)
    assert measured.exact_match == pytest.approx(official["exact_match"] / 100)
    # perfect logits score 1.0: the scoring itself cannot hide a wrong mapping
    perfect = np.full_like(logits, -10.0)
    colours = {"red", "blue", "green", "black", "white"}
    contexts = json.loads(arrays["contexts"].item())
    golds = json.loads(arrays["answers"].item())
    for row, (example, offsets) in enumerate(zip(arrays["example"], arrays["offsets"])):
        for token, (begin, end) in enumerate(offsets):
            if begin >= 0 and contexts[example][begin:end] == golds[example][0] and golds[example][0] in colours:
                perfect[row, :, token] = 10.0
    assert score_logits(perfect, arrays)["exact_match"] == 1.0
    assert study.trials


@pytest.mark.parametrize(("update", "message"), [
    ({"trim_vocab": True}, "trim_vocab"),
    ({"task": {"dataset": "squad", "test": "t.json"}}, "task.test"),
])
def test_qa_configs_refuse_what_qa_cannot_do(update: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        SearchConfig.model_validate({"task": {"dataset": "squad"}, **update})


def test_the_task_kind_decides_qa_not_the_file_suffix() -> None:
    assert not SearchConfig.model_validate({"task": {"dataset": "rows.json"}}).task.record.spans  # JSON lines of texts
    assert SearchConfig.model_validate({"task": {"dataset": "mine.json", "kind": "qa"}}).task.record.spans
    assert SearchConfig.model_validate({"task": {"dataset": "squad"}}).task.score_name == "F1"
    # a recipe without seq_len gets the QA windows' length, not a classifier's 64 tokens
    assert SearchConfig.model_validate({"task": {"dataset": "squad"}, "supernet": {"steps": 5}}).train_recipe().seq_len == 256


def test_a_qa_config_gets_the_qa_demo_defaults(tmp_path: Path) -> None:
    from edgenas.config import QA_DEMO_RECIPE

    config = SearchConfig.model_validate({"task": {"dataset": "squad"}})
    assert config.supernet == QA_DEMO_RECIPE and config.candidates.seq_lens == [256, 384]
    assert config.measure.eval_examples == 200
    given = SearchConfig.model_validate({"task": {"dataset": "squad"}, "candidates": {"seq_lens": [128]},
                                         "supernet": {"steps": 5, "seq_len": 128}})
    assert given.candidates.seq_lens == [128] and given.supernet == {"steps": 5, "seq_len": 128}
    assert SearchConfig().candidates.seq_lens == [48, 64]  # classification keeps its own
    path = tmp_path / "bad.yaml"
    path.write_text("task: {dataset: squad}\ntrim_vocab: true\n")
    with pytest.raises(ConfigError, match="bad.yaml: trim_vocab"):
        load_config(path)


# ---------------------------------------------------------------- export, predict, compare a QA model


@pytest.fixture(scope="module")
def qa_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-trial QA search and its max trial exported to every runtime: (model dir, cache)."""
    from edgenas.search.results.export import ExportOptions, export_study

    root = tmp_path_factory.mktemp("qa-export")
    config = load_config(make_tiny_qa_project(root / "project", runtimes={"onnxruntime": ["fp32"]}))
    storage = f"sqlite:///{root / 'out' / 'edgenas.db'}"
    (root / "out").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE_DIR", str(root / "cache"))
        run_search(config, SearchOptions(out_dir=root / "out", storage=storage, study_name="qa", n_trials=2,
                                         progress=False), Console(file=io.StringIO()))
        options = ExportOptions(root / "export", trials="0", steps=2, batch_size=8, other_runtime=True, progress=False)
        model_dir = export_study("qa", storage, options, Console(file=io.StringIO()))[0]
    return model_dir, root / "cache"


def test_a_qa_export_is_scored_on_spans_in_every_runtime(qa_export: tuple[Path, Path]) -> None:
    model_dir, _ = qa_export
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["task"] == "qa" and metrics["stride"] == 8
    assert 0 <= metrics["baselines"]["sliding_window"]["exact_match"] <= metrics["baselines"]["sliding_window"]["dev"]
    assert set(metrics["artifacts"]) == {"onnxruntime", "tflite", "executorch"}
    for artifact in metrics["artifacts"].values():
        measured = artifact["measurement"]
        assert 0 <= measured["exact_match"] <= measured["dev_accuracy"] <= 1 and "test_accuracy" not in measured
        assert measured["n_eval"] == metrics["data"]["n_dev"] == 10
    card = (model_dir / "README.md").read_text()
    assert "extractive question-answering" in card and "dev EM | dev F1" in card and "--question" in card
    assert "sliding-window lexical baseline on the same questions" in card


def test_predict_answers_with_a_span_of_the_context(qa_export: tuple[Path, Path], capsys) -> None:
    from edgenas.cli import main
    from edgenas.runtime.predict import Predictor

    model_dir, _ = qa_export
    context = " ".join(["the car is red . the phone is blue ."] * 6)  # longer than one 24-token window
    for runtime in ("onnxruntime", "tflite", "executorch"):
        answer = Predictor(model_dir, runtime=runtime).answer("what is the phone ?", context)
        assert answer.text and context[answer.start:answer.end] == answer.text and 0 < answer.score <= 1
    main(["predict", str(model_dir), "--question", "what is the car ?", "--context", context, "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert context[printed["start"]:printed["end"]] == printed["answer"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--question", "what is the car ?"], "--context"),
    (["--context", "the car is red ."], "--question"),
    (["some text"], "answers questions"),
    (["some text", "--question", "what is the car ?", "--context", "the car is red ."], "not both"),
])
def test_predict_refuses_a_qa_call_without_its_parts(qa_export: tuple[Path, Path], argv: list[str], message: str,
                                                     capsys) -> None:
    from edgenas.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(qa_export[0]), *argv])
    assert exit_info.value.code != 0 and message in capsys.readouterr().err


def test_compare_times_and_scores_a_qa_model(qa_export: tuple[Path, Path], tmp_path: Path, capsys,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    from edgenas.cli import main

    model_dir, cache = qa_export
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(cache))
    main(["compare", str(model_dir), "--modes", "fp32", "--runs", "3", "--warmup", "0", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "F1" in printed and "question" in printed and max(len(line) for line in printed.splitlines()) <= 80
    with (tmp_path / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok"] * 3
    for row in rows:
        assert float(row["ms_per_question"]) == pytest.approx(3 * float(row["median_ms"]))
        assert float(row["torch_agreement"]) == 1.0 and float(row["exact_match"]) <= float(row["dev_accuracy"])
        assert float(row["max_abs_logit_diff"]) < 1e-3  # torch's reference is at full width, padding included


def test_compare_rescores_a_qa_model_on_more_dev_questions(qa_export: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--questions rebuilds the dev windows as the export did (its tokenizer, length, stride and seed), for
    another count of seeded questions: all of dev, for the full-dev figures."""
    import csv

    from edgenas.cli import main

    model_dir, cache = qa_export
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(cache))
    main(["compare", str(model_dir), "--modes", "onnxruntime/fp32", "--runs", "3", "--warmup", "0",
          "--questions", "4", "--out", str(tmp_path)])
    dev = np.load(tmp_path / "dev-4-questions" / "dev.npz")
    exported = np.load(model_dir / "data" / "dev.npz")
    assert len(np.unique(dev["example"])) == 4 < len(np.unique(exported["example"]))
    assert dev["input_ids"].shape[1] == exported["input_ids"].shape[1]
    with (tmp_path / "compare.csv").open() as fh:
        row, = csv.DictReader(fh)
    assert row["status"] == "ok" and float(row["torch_agreement"]) == 1.0


def test_predict_reads_a_context_file_and_refuses_one_that_is_not_text(qa_export: tuple[Path, Path], tmp_path: Path,
                                                                     capsys) -> None:
    from edgenas.cli import main

    good, bad = tmp_path / "context.txt", tmp_path / "context.bin"
    good.write_text("the car is red . the phone is blue .")
    bad.write_bytes(b"\xff\xfe the car")
    main(["predict", str(qa_export[0]), "--question", "what is the car ?", "--context-file", str(good), "--json"])
    assert json.loads(capsys.readouterr().out)["answer"]
    with pytest.raises(SystemExit):
        main(["predict", str(qa_export[0]), "--question", "what is the car ?", "--context-file", str(bad)])
    assert "not UTF-8" in capsys.readouterr().err


def test_data_info_describes_a_qa_file(tmp_path: Path, capsys) -> None:
    from edgenas.cli import main
    from tiny_project import write_qa_dataset

    path = write_qa_dataset(tmp_path)
    main(["data", "info", str(path), "--qa"])
    printed = capsys.readouterr().out
    assert "extractive QA" in printed and "questions" in printed
    assert "50" in printed and "10" in printed  # 5 of the 6 articles train (50 questions), 1 is dev (10)


def test_export_refuses_to_trim_a_qa_vocabulary(qa_export: tuple[Path, Path], tmp_path: Path) -> None:
    from edgenas.errors import EdgenasError
    from edgenas.search.results.export import ExportOptions, export_study

    root = qa_export[0].parent.parent
    with pytest.raises(EdgenasError, match="--trim-vocab works for text classifiers only"):
        export_study("qa", f"sqlite:///{root / 'out' / 'edgenas.db'}",
                     ExportOptions(tmp_path, trials="0", trim_vocab=True, progress=False), Console(file=io.StringIO()))


def test_a_qa_front_that_does_not_beat_the_lexical_baseline_is_warned_about() -> None:
    import optuna

    from edgenas.search.study import verdict

    study = optuna.create_study()
    study.set_user_attr(verdict.BASELINES_ATTR, {"n_dev": 200, "n_test": 0, "names": qa_data.BASELINE_NAMES,
                                                 "score": "F1", "sliding_window": {"dev": 0.15}})
    warning = verdict.front_warning(study, 0.18, 200)
    assert warning and "best dev F1 0.180" in warning and "sliding-window lexical baseline (0.150)" in warning
    assert verdict.front_warning(study, 0.30, 200) is None  # 0.30±0.06 clearly beats 0.15±0.05
    assert "sliding-window lexical baseline 0.150" in verdict.baselines_line(study.user_attrs[verdict.BASELINES_ATTR])
