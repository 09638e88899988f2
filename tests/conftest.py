"""Shared fixtures: an isolated cache dir and a tiny WordPiece vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_project import make_tiny_project

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY_WORDS = "the a good bad great awful service phone car love hate not is it was ok fine".split()


@pytest.fixture
def tiny_vocab(tmp_path: Path) -> Path:
    """A vocab.txt with the BERT specials and a handful of words."""
    path = tmp_path / "vocab.txt"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, ".", "!", "#"]
    path.write_text("\n".join(tokens) + "\n")
    return path


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point edgenas's cache at a fresh directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(cache))
    return cache


# ---------------------------------------------------------------- a tiny finished study (export/report/compare/predict)

TWO_CLASSES = {"pos": ["good", "great", "love", "fine"], "neg": ["bad", "awful", "hate", "not"]}


class TinyStudy:
    """A finished 2-trial search on tiny data, and one trial exported with every runtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        self.out = root / "out"
        self.storage = f"sqlite:///{(self.out / 'edgenas.db').resolve()}"
        self.name = "tiny"
        self.export_dir = root / "export"
        self.model_dir: Path | None = None


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """Run a real 2-trial search and export its fastest Pareto trial (fine-tune, ONNX + TFLite)."""
    from rich.console import Console

    from edgenas.config import load_config
    from edgenas.search.results.export import ExportOptions, export_study
    from edgenas.search.study.objectives import pareto_trials
    from edgenas.search.study.runner import SearchOptions, run_search

    tiny = TinyStudy(tmp_path_factory.mktemp("tiny-study"))
    config = load_config(make_tiny_project(
        tiny.root, runtimes={"onnxruntime": ["fp32"]}, classes=TWO_CLASSES,
        supernet={"steps": 5, "batch_size": 8, "seq_len": 16, "teacher": None, "finetune_steps": 2,
                  "finetune_lr": 3e-4},
        eval_examples=10, calibration_examples=8,
    ))
    tiny.out.mkdir()
    quiet = Console(file=open(os.devnull, "w"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE_DIR", str(tiny.cache))
        study = run_search(config, SearchOptions(out_dir=tiny.out, storage=tiny.storage, study_name=tiny.name,
                                                 n_trials=2, sampler="random", progress=False), quiet)
        first = pareto_trials(study)[0].number
        options = ExportOptions(tiny.export_dir, trials=str(first), batch_size=8, other_runtime=True,
                                progress=False)
        tiny.model_dir = export_study(tiny.name, tiny.storage, options, quiet)[0]
    return tiny


@pytest.fixture
def tiny_env(tiny_study: TinyStudy, monkeypatch: pytest.MonkeyPatch) -> TinyStudy:
    """The tiny study, with edgenas's cache pointing at its cache (compile cache hits)."""
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tiny_study.cache))
    return tiny_study
