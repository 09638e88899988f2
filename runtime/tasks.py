"""The task catalog: every kind of model edgenas builds (a text classifier, an extractive-QA
model), declared once.

A record says what the model's head is (by transformers class name and the layout of its
logits), how a scored set is scored and cut, what the score is called and how a results
table shows it. `get_task`, `task_of_set` and `task_of_model` are the only places a name,
a set or a saved model becomes a Task.

Imports only the standard library and numpy (and this folder's qa.py for span scoring),
so it ships to a device with the runners.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .runners import RuntimeLoadError

#: a QA set's per-question arrays: JSON lists in 0-d string arrays
QUESTION_KEYS = ("questions", "contexts", "answers")


class UnknownTaskError(RuntimeLoadError):
    """A task name, or a saved model, that the catalog does not know."""


def question_field(array: np.ndarray) -> list[Any]:
    """One of a QA set's per-question lists (QUESTION_KEYS), decoded."""
    return json.loads(array.item())


# ---------------------------------------------------------------- scoring a set's logits


def _label_scores(logits: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The share of rows whose argmax is the label."""
    return {"accuracy": float((logits.argmax(axis=-1) == arrays["labels"].reshape(-1)).mean()),
            "n_eval": int(len(arrays["labels"]))}


def _span_scores(logits: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The official SQuAD v1.1 F1 (as a fraction, under "accuracy") and exact match of each
    question's best span over its windows; n_eval counts questions."""
    from .qa import best_spans, squad_scores, windows_of

    windows, contexts = windows_of(arrays), question_field(arrays["contexts"])
    golds = question_field(arrays["answers"])
    answers = best_spans(logits[:, 0], logits[:, 1], windows, contexts)
    official = squad_scores([a.text for a in answers], golds)
    return {"accuracy": official["f1"] / 100, "exact_match": official["exact_match"] / 100,
            "n_eval": len(golds), "windows_per_question": len(windows) / len(golds)}


def _first_rows(arrays: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    return {k: v[:count] for k, v in arrays.items()}


def _first_questions(arrays: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """A QA set cut to its first `count` questions and all of their windows."""
    keep = arrays["example"] < count
    return {k: np.array(json.dumps(question_field(v)[:count])) if k in QUESTION_KEYS else v[keep]
            for k, v in arrays.items()}


def _rows(arrays: dict[str, np.ndarray]) -> int:
    return len(arrays["input_ids"])


def _questions(arrays: dict[str, np.ndarray]) -> int:
    return len(question_field(arrays["answers"]))


# ---------------------------------------------------------------- the records


@dataclass(frozen=True)
class Column:
    """A number in a results table: its heading, least width, the row key it shows, its format."""

    heading: str
    width: int
    key: str
    format: str


@dataclass(frozen=True)
class Task:
    """One kind of model: its head, how its scored sets are scored, and how its results are shown."""

    name: str
    architecture: str  # the transformers class of an exported model (config.json's "architectures")
    teacher_class: str  # the transformers auto class a teacher of the task is loaded as
    spans: bool  # answers with a span of a context: logits (batch, 2, seq), a start and an end score per token
    score_name: str  # what the accuracy objective measures
    score_short: str  # the same in a narrow column
    score_scale: float  # a score as shown: 1 (accuracy as a fraction) or 100 (F1 in points)
    scored_label: str  # the axis title of a dev score measured through a runtime
    score: Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, Any]]  # a scored set's logits -> scores
    first: Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]  # a scored set cut to its first n
    examples: Callable[[dict[str, np.ndarray]], int]  # the examples (QA: questions) a scored set holds
    compare_columns: tuple[Column, ...]  # `edgenas compare`'s numbers besides latency
    compare_note: str  # the line under compare's table (at most 80 characters)
    what: str  # a model card's description of the model ({labels}: the label names)
    pareto_time: Column  # the Pareto table's second time, after the median
    pareto_note: str  # the line under the Pareto table ("": none)
    report_accuracy: str  # `edgenas report`'s sentence on how the score was measured
    data_module: str  # the search/data module whose `load_splits(task_config)` loads the task's data
    packaged: str | None = None  # the packaged dataset whose name alone makes a config this task
    trims_vocab: bool = True  # an exported model's vocabulary can be cut to the tokens its data uses
    test_file: bool = True  # a config may name a test file (else the task is scored on dev)
    #: what a config of the task leaves out: (section, field, value)
    config_defaults: tuple[tuple[str, str, Any], ...] = ()
    curve_examples: int = 1000  # held-out examples a learning-curve point scores
    #: an example is two texts (a config names text_pair_column), read as BERT's pair: token type 1 for the second
    pairs: bool = False

    def __str__(self) -> str:
        return self.name


_LATENCY = (Column("median\nms", 6, "median_ms", "{:.3f}"), Column("p90\nms", 6, "p90_ms", "{:.3f}"))
_AGREEMENT = Column("agree\ntorch", 5, "torch_agreement", "{:.3f}")

CLASSIFICATION = Task(
    name="classification",
    architecture="MobileBertForSequenceClassification",
    teacher_class="AutoModelForSequenceClassification",
    spans=False,
    score_name="accuracy", score_short="acc", score_scale=1.0,
    scored_label="dev accuracy (through the runtime)",
    score=_label_scores, first=_first_rows, examples=_rows,
    compare_columns=(*_LATENCY, Column("p99\nms", 6, "p99_ms", "{:.3f}"), Column("ex/s", 5, "throughput_per_s", "{:.0f}"),
                     Column("MB", 6, "size_mb", "{:.2f}"), Column("dev\nacc", 6, "dev_accuracy", "{:.4f}"), _AGREEMENT),
    compare_note="batch 1; ex/s = 1000 / median ms; agree torch: dev predictions equal to torch's",
    what="a text classifier ({labels})",
    pareto_time=Column("p90", 6, "p90_ms", "{:.2f}"),
    pareto_note="",
    report_accuracy="accuracy is dev accuracy measured through the runtime, with its 95 % (Wilson) interval.",
    data_module="edgenas.search.data.datasets",
    curve_examples=1000,  # about ±3 points of accuracy
)

QA = Task(
    name="qa",
    architecture="MobileBertForQuestionAnswering",
    teacher_class="AutoModelForQuestionAnswering",
    spans=True,
    score_name="F1", score_short="F1", score_scale=100.0,
    scored_label="dev F1, SQuAD v1.1 (through the runtime)",
    score=_span_scores, first=_first_questions, examples=_questions,
    compare_columns=(*_LATENCY, Column("ms per\nquestion", 8, "ms_per_question", "{:.2f}"),
                     Column("MB", 6, "size_mb", "{:.2f}"), Column("dev\nEM", 5, "exact_match", "{:.3f}"),
                     Column("dev\nF1", 5, "dev_accuracy", "{:.3f}"), _AGREEMENT),
    compare_note="batch 1; ms: one window; agree torch: start/end token as torch's; SQuAD EM, F1",
    what="an extractive question-answering model (SQuAD v1.1 style: the answer is a span of the context)",
    pareto_time=Column("ms/q", 7, "ms_per_question", "{:.2f}"),  # a question: all the windows of its context
    pareto_note=("F1: the official SQuAD v1.1 F1 (as a fraction); ms: one window of seq tokens; ms/q: a question, "
                 "all the windows of its context"),
    report_accuracy=("accuracy is the official SQuAD v1.1 F1 on dev questions, through the runtime, with a 95 % "
                     "(Wilson) interval that is conservative for a mean F1; a question's latency is its windows' "
                     "(ms/q)."),
    data_module="edgenas.search.data.qa",
    packaged="squad",
    trims_vocab=False,
    test_file=False,
    # long contexts need long windows; a question costs several windows, so fewer are scored
    config_defaults=(("candidates", "seq_lens", (256, 384)), ("measure", "eval_examples", 200)),
    curve_examples=500,  # about ±2 points of F1
)

PAIR = dataclasses.replace(
    CLASSIFICATION,
    name="pair",
    what="a sentence-pair classifier ({labels}): it reads two texts as one pair",
    pairs=True,
    config_defaults=(("candidates", "seq_lens", (64, 128)),),  # two texts: twice a tweet's windows
)

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, QA, PAIR)}


def get_task(name: str | Task) -> Task:
    """The catalog's record of a task name (a record is returned as it is)."""
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r} (choose from {', '.join(TASKS)})") from None


def task_of_config(kind: str | None, dataset: Any) -> Task:
    """The task a config's task.kind and task.dataset (as written) name: the kind if given, else the
    task whose packaged dataset it is, else a classifier."""
    if kind is not None:
        return get_task(kind)
    return next((task for task in TASKS.values() if task.packaged is not None and task.packaged == dataset),
                CLASSIFICATION)


def task_of_set(arrays: dict[str, np.ndarray]) -> Task | None:
    """The task a tokenized set is scored for: QA windows carry their token offsets, labelled
    texts their labels; None for a set that cannot be scored (inputs only)."""
    if "offsets" in arrays:
        return QA
    return CLASSIFICATION if "labels" in arrays else None


def task_of_model(model_dir: str | Path) -> Task:
    """The task of a saved model: the one an exported directory's metrics.json names, else the one
    its config.json's architectures name (a classifier where they name none of the catalog's)."""
    metrics = Path(model_dir) / "metrics.json"
    if metrics.is_file():
        named_task = json.loads(metrics.read_text()).get("task")
        if named_task is not None:
            return get_task(named_task)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    named = config.get("architectures") or []
    return next((task for task in TASKS.values() if task.architecture in named), CLASSIFICATION)
