"""Shared fixtures: an isolated cache dir and a tiny WordPiece vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
