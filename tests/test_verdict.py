"""Honest accuracy: intervals, the baselines on the same rows, the warning when the front does not beat them."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from edgenas.config import SearchConfig
from edgenas.search.data.baselines import compute_baselines, load_baselines
from edgenas.search.data.datasets import Splits, TextSplit
from edgenas.search.study import verdict
from edgenas.search.uncertainty import clearly_better, half_width, wilson_interval


def test_wilson_interval_matches_the_usual_figures() -> None:
    low, high = wilson_interval(0.8, 500)
    assert low < 0.8 < high and high - low == pytest.approx(0.070, abs=0.002)
    assert half_width(0.8, 2000) < half_width(0.8, 500) / 1.9
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0) and wilson_interval(0.5, 0) == (0.0, 1.0)
    assert clearly_better(0.80, 3000, 0.76, 3000) and not clearly_better(0.78, 500, 0.76, 500)


def _splits() -> Splits:
    rng = np.random.default_rng(0)
    words = {0: "good great love".split(), 1: "bad awful hate".split()}

    def split(n: int) -> TextSplit:
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(words[int(y)], 2)) + " the phone" for y in labels]
        return TextSplit(texts, labels)

    return Splits(split(200), split(60), split(60), ["neg", "pos"], name="toy")


def test_baselines_are_fitted_and_cached(tmp_path) -> None:
    splits = _splits()
    baselines = load_baselines(splits, tmp_path)
    table = baselines.table(splits)
    assert table["tfidf"]["dev"] == 1.0 and table["majority"]["dev"] < 0.7  # the toy words separate the classes
    assert len(list(tmp_path.glob("baselines-*.json"))) == 1
    assert load_baselines(splits, tmp_path) == baselines == compute_baselines(splits)


def test_front_warning_only_when_the_front_is_within_the_noise(tmp_path) -> None:
    config = SearchConfig.model_validate({"measure": {"eval_examples": 40}})
    study = optuna.create_study()
    study.set_user_attr(verdict.BASELINES_ATTR, verdict.study_baselines(_splits(), config, tmp_path))
    baselines = study.user_attrs[verdict.BASELINES_ATTR]
    assert baselines["n_dev"] == 40 and "on the same 40 dev examples" in verdict.baselines_line(baselines)
    majority = baselines["majority"]["dev"]
    assert "majority class" in verdict.front_warning(study, majority + 0.02, 40)
    assert "TF-IDF" in verdict.front_warning(study, 0.97, 40)  # beats the majority, not TF-IDF's 1.0
    study.set_user_attr(verdict.BASELINES_ATTR, {**baselines, "tfidf": {"dev": 0.7, "test": 0.7}})
    assert verdict.front_warning(study, 0.97, 40) is None
    assert verdict.accuracy_text(0.8, 500) == "0.800±0.035" and verdict.accuracy_text(0.8, None) == "0.800"
