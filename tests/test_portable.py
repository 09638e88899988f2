"""`edgenas train` -> a portable fp16 supernet directory -> `edgenas search --supernet DIR` without retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.numpy import load_file

from edgenas.cli import main
from tiny_project import make_tiny_project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config path, portable directory) trained in a cache of its own."""
    root = tmp_path_factory.mktemp("portable")
    config = make_tiny_project(root / "project", runtimes={"onnxruntime": ["fp32"]})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE_DIR", str(root / "gpu-box-cache"))
        main(["train", "--config", str(config), "--out", str(root / "supernet"), "--device", "cpu", "--no-progress"])
    return config, root / "supernet"


def test_train_writes_a_small_self_describing_fp16_directory(trained) -> None:
    _, directory = trained
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "supernet.json", "supernet.safetensors"]
    record = json.loads((directory / "supernet.json").read_text())
    assert record["dtype"] == "float16" and record["training"]["device"].startswith("CPU")
    assert {v.dtype.name for v in load_file(str(directory / "supernet.safetensors")).values()} == {"float16"}
    assert record["space"]["name"] == "tiny" and record["recipe"]["steps"] == 6
    assert "edgenas search" in (directory / "README.md").read_text()


def test_search_uses_the_directory_without_training(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgenas.search.training.start as start

    config, directory = trained
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "edge-box-cache"))
    monkeypatch.setattr(start, "initial_supernet", lambda *a, **k: pytest.fail("the supernet was trained again"))
    main(["search", "--config", str(config), "--supernet", str(directory), "--out", str(tmp_path / "out"),
          "--n-trials", "1", "--no-progress"])
    assert list((tmp_path / "edge-box-cache" / "supernets").glob("*/supernet.json"))


def test_a_supernet_of_other_data_is_refused_in_one_line(trained, tmp_path: Path, capsys) -> None:
    config, directory = trained
    other = yaml.safe_load(config.read_text())
    other["task"]["dataset"] = str(make_tiny_project(tmp_path / "other", classes={
        "yes": ["good", "great"], "no": ["bad", "awful"]}).parent / "data.csv")
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    with pytest.raises(SystemExit) as info:
        main(["search", "--config", str(path), "--supernet", str(directory), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "its data (hash" in err and "\n" not in err


def test_bad_device_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--device", "tpu", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "unknown device 'tpu'" in capsys.readouterr().err


def test_a_qa_supernet_trains_here_and_searches_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The QA task takes the same train-on-one-box, search-on-another path."""
    import edgenas.search.training.start as start
    from tiny_project import make_tiny_qa_project

    config = make_tiny_qa_project(tmp_path / "project", runtimes={"onnxruntime": ["fp32"]})
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "gpu-box-cache"))
    main(["train", "--config", str(config), "--out", str(tmp_path / "supernet"), "--device", "cpu", "--no-progress"])
    record = json.loads((tmp_path / "supernet" / "supernet.json").read_text())
    assert record["task"] == "qa" and record["data"]["label_names"] == ["start", "end"]
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "edge-box-cache"))
    monkeypatch.setattr(start, "initial_supernet", lambda *a, **k: pytest.fail("the supernet was trained again"))
    main(["search", "--config", str(config), "--supernet", str(tmp_path / "supernet"), "--out", str(tmp_path / "out"),
          "--n-trials", "1", "--no-progress"])
