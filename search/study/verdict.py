"""How far a study's accuracies can be trusted: the dev rows every candidate is scored on,
the two baselines on those same rows, and whether the front beats them by more than the noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna

from edgenas.config import SearchConfig
from edgenas.search.data.datasets import seeded_rows
from edgenas.search.uncertainty import clearly_better, half_width

#: study user attribute holding the baselines on the study's dev rows
BASELINES_ATTR = "baselines"
BASELINE_NAMES = {"majority": "majority class", "tfidf": "TF-IDF + logistic regression"}


def eval_rows(splits, config: SearchConfig) -> np.ndarray:
    """The dev rows every candidate is scored on (seeded, sorted): all of dev when it is small enough."""
    return seeded_rows(len(splits.dev), config.measure.eval_examples, config.task.split_seed)


def study_baselines(splits, config: SearchConfig, cache_dir: Path) -> dict[str, Any]:
    """Majority-class and TF-IDF accuracies on the study's dev rows and on test (cached per dataset)."""
    from edgenas.search.data.baselines import load_baselines

    rows = eval_rows(splits, config)
    baselines = load_baselines(splits, cache_dir)
    return {"n_dev": int(len(rows)), "n_test": len(splits.test), "tfidf_c": baselines.tfidf_c,
            **baselines.table(splits, rows)}


def accuracy_text(accuracy: float, n: int | None) -> str:
    """0.812±0.013: the 95 % interval's half width when n is known."""
    return f"{accuracy:.3f}" if not n else f"{accuracy:.3f}±{half_width(accuracy, n):.3f}"


def baselines_line(baselines: dict[str, Any], split: str = "dev") -> str:
    """One line naming both baselines on the split the study scores on."""
    n = baselines[f"n_{split}"]
    parts = [f"{label} {accuracy_text(baselines[name][split], n)}" for name, label in BASELINE_NAMES.items()]
    return f"baselines on the same {n} {split} examples: " + ", ".join(parts)


def front_warning(study: optuna.Study, best: float, n: int) -> str | None:
    """A warning when the most accurate front candidate does not clearly beat TF-IDF (or the majority class)."""
    baselines = study.user_attrs.get(BASELINES_ATTR)
    if not baselines:
        return None
    for name in ("majority", "tfidf"):
        score = baselines[name]["dev"]
        if not clearly_better(best, n, score, baselines["n_dev"]):
            return (f"warning: the front's best dev accuracy {accuracy_text(best, n)} does not beat "
                    f"{BASELINE_NAMES[name]} ({score:.3f}) by more than its 95 % uncertainty on {n} examples; "
                    "train the supernet longer (supernet.steps) or score on more dev examples (measure.eval_examples)")
    return None
