"""`edgenas compare`: one model through every backend; CSV, PNG and HTML."""

from __future__ import annotations

import csv

import pytest

from edgenas.cli import main
from edgenas.errors import EdgenasError
from edgenas.search.results.compare import CompareOptions, plan
from edgenas.runtime.backends import BACKENDS


def test_plan_covers_every_mode_or_the_subset() -> None:
    assert len(plan(CompareOptions(modes=["all"]))) == sum(len(b.modes) for b in BACKENDS.values())
    searched = plan(CompareOptions())  # the default: the modes a search samples
    assert searched == [(name, m.name) for name, b in BACKENDS.items() for m in b.modes if m.searched]
    assert 0 < len(searched) < len(plan(CompareOptions(modes=["all"])))
    assert plan(CompareOptions(modes=["fp32"])) == [("tflite", "fp32"), ("onnxruntime", "fp32"), ("executorch", "fp32")]
    assert plan(CompareOptions(modes=["onnxruntime/fp16", "full_int8"])) == [("tflite", "full_int8"), ("onnxruntime", "fp16")]
    with pytest.raises(EdgenasError, match="unknown mode 'int3'"):
        plan(CompareOptions(modes=["int3"]))


def test_compare_cli_writes_table_csv_and_plots(tiny_env, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    # the modes the export compiled: compile-cache hits keep this fast
    main(["compare", str(tiny_env.model_dir), "--modes", "fp32", "--runs", "3", "--warmup", "0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert all(f"{code}/fp32" in printed for code in ("tflite", "onnx", "executorch"))  # short runtime names
    with (out / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["runtime"], r["mode"], r["status"]) for r in rows] == [
        ("tflite", "fp32", "ok"), ("onnxruntime", "fp32", "ok"), ("executorch", "fp32", "ok")]
    for row in rows:
        assert float(row["throughput_per_s"]) == pytest.approx(1000 / float(row["median_ms"]))
        assert float(row["median_ms"]) <= float(row["p90_ms"]) <= float(row["p99_ms"])
        assert float(row["torch_agreement"]) == 1.0 and 0 <= float(row["dev_accuracy"]) <= 1
    assert (out / "compare.png").stat().st_size > 1000
    assert "plotly" in (out / "compare.html").read_text()


def test_compare_refuses_a_non_export_dir(tmp_path) -> None:
    from edgenas.search.results.compare import model_inputs

    with pytest.raises(EdgenasError, match="not an `edgenas export` model directory"):
        model_inputs(tmp_path)


def test_compare_rescores_only_qa_models_on_more_questions(tiny_env, tmp_path) -> None:
    from edgenas.search.results.compare import compare_model

    with pytest.raises(EdgenasError, match="--questions is for QA models"):
        compare_model(tiny_env.model_dir, CompareOptions(modes=["onnxruntime/fp32"], questions=10, out_dir=tmp_path))


def test_compare_skips_a_runtime_missing_here_with_its_reason(tiny_env, tmp_path, capsys, monkeypatch) -> None:
    from edgenas.runtime.backends import Backend

    monkeypatch.setattr(Backend, "missing", lambda self: "executorch is not installed (pip install executorch)"
                        if self.name == "executorch" else None)
    main(["compare", str(tiny_env.model_dir), "--modes", "fp32", "--runs", "3", "--warmup", "0",
          "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert "executorch/fp32: skipped (executorch is not installed (pip install executorch))" in printed
    assert "onnx/fp32: ok" in printed
