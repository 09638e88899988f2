"""`edgenas report`: Pareto front, hypervolume, importances as HTML + PNG, and a summary table."""

from __future__ import annotations

import optuna
import pytest

from edgenas.cli import main
from edgenas.errors import EdgenasError
from edgenas.search.results.report import dashboard_command, load_study, reference_point, storage_url
from edgenas.search.study.storage import ARTIFACTS_ATTR, default_storage, open_storage


def test_report_cli_writes_plots_and_summary(tiny_env, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    main(["report", "--study", tiny_env.name, "--storage", tiny_env.storage, "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"optuna-dashboard sqlite:///{tiny_env.out.resolve()}/edgenas.db --artifact-dir " \
           f"{(tiny_env.out / 'artifacts').resolve()}\n" in printed
    for name in ("pareto_front", "hypervolume_history", "optimization_history_latency"):
        assert (out / f"{name}.html").stat().st_size > 0
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "size (MB)" in (out / "pareto_front.html").read_text()  # size as the Pareto scatter's colour
    summary = (out / "summary.md").read_text()
    assert "## Pareto front" in summary and "| trial | architecture |" in summary
    # the tiny supernet is barely trained: the baselines are shown and the front is flagged as not beating them
    assert "Baselines on the same 10 dev examples: majority class" in summary and "tf-idf" not in summary
    assert "**Warning: the front's best dev accuracy" in summary
    assert (out / "trials.csv").read_text().count("\n") == 3  # header + 2 trials


def test_reference_point_is_zero_accuracy_and_worse_than_every_trial(tiny_env) -> None:
    study, config = load_study(tiny_env.name, tiny_env.storage)
    point = reference_point(study, config.objectives)
    assert point[0] == 0.0
    for trial in study.trials:
        assert all(value < ref for value, ref in zip(trial.values[1:], point[1:]))


def test_missing_default_storage_is_a_user_error(tmp_path) -> None:
    with pytest.raises(EdgenasError, match="run `edgenas search` first"):
        storage_url(None, tmp_path)


def test_dashboard_command_without_a_recorded_artifact_dir(tmp_path) -> None:
    url = default_storage(tmp_path / "out")
    study = optuna.create_study(storage=open_storage(url), study_name="old")
    assert dashboard_command(study, url).endswith(f"--artifact-dir {tmp_path / 'out' / 'artifacts'}")
    study.set_user_attr(ARTIFACTS_ATTR, "/shared/artifacts")
    assert dashboard_command(study, url) == f"optuna-dashboard {url} --artifact-dir /shared/artifacts"
