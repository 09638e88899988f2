"""How far a study's accuracies can be trusted: the dev rows every candidate is scored on,
the two baselines on those same rows, and whether the front beats them by more than the noise."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from edgenas.config import SearchConfig
from edgenas.search.data.datasets import seeded_rows
from edgenas.search.uncertainty import clearly_better, half_width

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits

#: study user attribute holding the baselines on the study's dev rows
BASELINES_ATTR = "baselines"
BASELINE_NAMES = {"majority": "majority class", "tfidf": "TF-IDF + logistic regression"}


def baseline_names(baselines: dict[str, Any]) -> dict[str, str]:
    """The recorded baselines' keys and labels (studies recorded before QA name none: a classifier's)."""
    return baselines.get("names") or BASELINE_NAMES


def best_baseline(baselines: dict[str, Any]) -> float:
    """The highest dev score among a study's recorded baselines."""
    return max(baselines[name]["dev"] for name in baseline_names(baselines))


def eval_rows(splits: TaskSplits, config: SearchConfig) -> np.ndarray:
    """The dev rows every candidate is scored on (seeded, sorted): all of dev when it is small enough."""
    return seeded_rows(len(splits.dev), config.measure.eval_examples, config.task.split_seed)


def study_baselines(splits: TaskSplits, config: SearchConfig, cache_dir: Path) -> dict[str, Any]:
    """The task's baselines on the study's dev rows and on test (a classifier's majority class and
    tuned TF-IDF, cached per dataset; QA's sliding-window F1 on the study's dev questions)."""
    rows = eval_rows(splits, config)
    return {"n_dev": int(len(rows)), "n_test": len(splits.test), **splits.baselines(rows, cache_dir)}


def accuracy_text(accuracy: float, n: int | None) -> str:
    """0.812±0.013: the 95 % interval's half width when n is known."""
    return f"{accuracy:.3f}" if not n else f"{accuracy:.3f}±{half_width(accuracy, n):.3f}"


def baselines_line(baselines: dict[str, Any], split: str = "dev") -> str:
    """One line naming the baselines on the split the study scores on."""
    n = baselines[f"n_{split}"]
    parts = [f"{label} {accuracy_text(baselines[name][split], n)}" for name, label in baseline_names(baselines).items()]
    return f"baselines on the same {n} {split} examples: " + ", ".join(parts)


def front_warning(study: optuna.Study, best: float, n: int) -> str | None:
    """A warning when the most accurate front candidate does not clearly beat every baseline."""
    baselines = study.user_attrs.get(BASELINES_ATTR)
    if not baselines:
        return None
    for name, label in baseline_names(baselines).items():
        score = baselines[name]["dev"]
        if not clearly_better(best, n, score, baselines["n_dev"]):
            return (f"warning: the front's best dev {baselines.get('score', 'accuracy')} {accuracy_text(best, n)} "
                    f"does not beat {label} ({score:.3f}) by more than its 95 % uncertainty on {n} examples; "
                    "train the supernet longer (supernet.steps) or score on more dev examples (measure.eval_examples)")
    return None
