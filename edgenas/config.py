"""The search configuration: a YAML file validated by pydantic, demo defaults built in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgenas.errors import EdgenasError
from edgenas.recipe import DEVICES, RECIPE_NAMES, TrainRecipe, named_recipe
from edgenas.runtime.backends import BACKENDS, KNOBS, UnknownBackendError, get_backend
from edgenas.runtime.tasks import TASKS, Task, UnknownTaskError, task_of_config

OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "size": "minimize"}


class ConfigError(EdgenasError):
    """A config file that cannot be used: names the file and the key."""


#: the demo recipes (what a config without `recipe:` or `supernet:` trains)
DEMO_RECIPE: dict[str, Any] = named_recipe("classification", "demo")
QA_DEMO_RECIPE: dict[str, Any] = named_recipe("qa", "demo")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Strict):
    """Which data to learn: the packaged tweets or a user CSV/JSONL (classification), or
    extractive QA on the packaged SQuAD v1.1 (`squad`) or a user's SQuAD-format .json (kind: qa)."""

    dataset: str = "tweets"
    #: classification or qa; unset: qa for `squad`, classification for anything else
    kind: Optional[str] = None
    text_column: str = "text"
    #: kind: pair: the column of each example's second text (the hypothesis, the query's document)
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    dev: Optional[str] = None
    test: Optional[str] = None
    tokenizer: Optional[str] = None
    split_seed: int = 0
    #: QA: tokens two consecutive windows of a long context share (SQuAD's standard doc stride)
    stride: int = Field(default=128, ge=1)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str | None) -> str | None:
        if kind is not None and kind not in TASKS:
            raise ValueError(f"unknown task kind {kind!r} (choose from {', '.join(TASKS)})")
        return kind

    @model_validator(mode="after")
    def _pair_column_with_pairs(self) -> "TaskConfig":
        if self.record.pairs and not self.text_pair_column:
            raise ValueError("kind: pair needs text_pair_column (the column of each example's second text)")
        if self.text_pair_column and not self.record.pairs:
            raise ValueError("text_pair_column is for sentence pairs: add kind: pair")
        return self

    @property
    def record(self) -> Task:
        """The catalog's record of this task (runtime/tasks.py)."""
        return task_of_config(self.kind, self.dataset)

    @property
    def score_name(self) -> str:
        """What the accuracy objective measures (accuracy; SQuAD's F1 for QA)."""
        return self.record.score_name


def _task_defaults(values: dict[str, Any], task: Task) -> dict[str, Any]:
    """A task's own defaults for what its config leaves out (QA: window lengths and scored questions)."""
    for key, field, default in task.config_defaults:
        section = values.get(key)
        if section is None or (isinstance(section, dict) and field not in section):
            values[key] = {**(section or {}), field: list(default) if isinstance(default, tuple) else default}
    return values


def searched_modes() -> dict[str, list[str]]:
    """Each installed backend with the modes the catalog marks as searched by default."""
    return {name: [m.name for m in backend.modes if m.searched]
            for name, backend in BACKENDS.items() if backend.missing() is None}


class CandidateConfig(_Strict):
    """What a trial may pick besides the architecture: runtimes and their modes, sequence length, knobs."""

    runtimes: dict[str, list[str]] = Field(default_factory=searched_modes)
    seq_lens: list[int] = Field(default_factory=lambda: [48, 64])  # tweets: median 33 tokens, p99 61
    threads: list[int] = Field(default_factory=lambda: [1])
    #: each runtime knob of the backend catalog and the values a trial may choose (default: the knob's default)
    knobs: dict[str, list[Any]] = Field(default_factory=lambda: {name: [k.default] for name, k in KNOBS.items()})

    @model_validator(mode="before")
    @classmethod
    def _knobs_at_top_level(cls, values: Any) -> Any:
        """`graph_optimization: [...]` and `xnnpack: [...]` directly under candidates, as before the catalog."""
        if isinstance(values, dict) and any(name in values for name in KNOBS):
            values = dict(values)
            knobs = dict(values.get("knobs") or {})
            for name in KNOBS:
                if name in values:
                    knobs[name] = values.pop(name)
            values["knobs"] = knobs
        return values

    @field_validator("runtimes")
    @classmethod
    def _modes_exist(cls, runtimes: dict[str, list[str]]) -> dict[str, list[str]]:
        if not runtimes:
            raise ValueError("at least one runtime is needed")
        for runtime, modes in runtimes.items():
            if not modes:
                raise ValueError(f"{runtime}: empty list of quantization modes")
            try:
                backend = get_backend(runtime)
                for mode in modes:
                    backend.mode(mode)
            except UnknownBackendError as exc:
                raise ValueError(str(exc)) from None
        return runtimes

    @field_validator("seq_lens", "threads")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("needs a non-empty list of positive integers")
        return values

    @field_validator("knobs")
    @classmethod
    def _knob_values(cls, knobs: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in knobs.items():
            if name not in KNOBS:
                raise ValueError(f"unknown knob {name!r}; the runtimes have {', '.join(KNOBS)}")
            if not values:
                raise ValueError(f"{name}: needs a non-empty list")
            try:
                for value in values:
                    KNOBS[name].check(value)
            except UnknownBackendError as exc:
                raise ValueError(str(exc)) from None
        return {name: knobs.get(name, [knob.default]) for name, knob in KNOBS.items()}

    def choices(self, knob: str) -> list[Any]:
        """The values a trial may choose for one knob of the catalog."""
        return self.knobs.get(knob, [KNOBS[knob].default])

    def installed(self) -> tuple["CandidateConfig", dict[str, str]]:
        """This config less the runtimes that cannot run here, and why each was left out."""
        missing = {name: why for name in self.runtimes if (why := get_backend(name).missing())}
        if missing and len(missing) == len(self.runtimes):
            raise ConfigError(f"none of the configured runtimes is installed: {'; '.join(missing.values())}")
        kept = {name: modes for name, modes in self.runtimes.items() if name not in missing}
        return self.model_copy(update={"runtimes": kept}), missing


#: the floors named by a baseline rather than by a score (budgets.min_accuracy)
ACCURACY_FLOORS = ("baseline", "clearly_above_baseline")


class Budgets(_Strict):
    """Hard limits a Pareto model must respect (Optuna constraints)."""

    max_latency_ms: Optional[float] = Field(default=None, gt=0)
    max_size_mb: Optional[float] = Field(default=None, gt=0)
    #: a score in [0, 1], or "baseline": the best baseline's score on the study's own dev rows (tuned
    #: TF-IDF for a classifier, the lexical F1 for QA), so the front holds only models worth shipping over it;
    #: "clearly_above_baseline" is the same floor in the search, and the export of the front also drops a model
    #: that does not beat that baseline by more than the 95 % uncertainty of the difference on the export's dev set
    min_accuracy: Optional[Union[Literal[ACCURACY_FLOORS], Annotated[float, Field(ge=0, le=1)]]] = None


class MeasureConfig(_Strict):
    """How each artifact is checked and timed."""

    target: str = "local"
    warmup: int = Field(default=5, ge=0)
    runs: int = Field(default=30, ge=3)
    eval_examples: int = Field(default=500, ge=10)
    parity_examples: int = Field(default=32, ge=1)
    calibration_examples: int = Field(default=32, ge=1)
    compile_timeout_s: float = Field(default=300, gt=0)
    reference_every: int = Field(default=10, ge=1)


class PrescreenConfig(_Strict):
    """Skip compiling candidates a latency and size predictor, learnt from the measured trials, puts clearly
    behind the front (search/study/prescreen.py)."""

    enabled: bool = False
    #: measured trials of a (backend, mode, threads) before its predictions are used
    min_trials: int = Field(default=6, ge=3)
    #: the share of candidates measured whatever their prediction, so the predictor stays honest
    measure_share: float = Field(default=0.25, ge=0, le=1)
    #: the prediction interval's coverage: a candidate is pruned only beyond it
    interval: float = Field(default=0.9, gt=0, lt=1)
    #: a stored study (same storage, same target) whose measurements the predictor starts from
    from_study: Optional[str] = None


class SearchConfig(_Strict):
    """Everything `edgenas search` needs besides storage and study flags."""

    task: TaskConfig = Field(default_factory=TaskConfig)
    space: str = "minilm"
    #: the pretrained weights the supernet starts from (default: the space's own `init`)
    init: Optional[str] = None
    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    #: the named training budget the `supernet:` fields start from (unset: demo, or gpu when `supernet:` is given)
    recipe: Optional[Literal[RECIPE_NAMES]] = None
    #: TrainRecipe fields: the named recipe's, overridden by the config's own
    supernet: dict[str, Any] = Field(default_factory=lambda: dict(DEMO_RECIPE))
    #: where every training step runs (auto: CUDA, then MPS, then the CPU); compiling and timing stay on the CPU/target
    device: Literal[DEVICES] = "auto"
    finetune_steps: int = Field(default=0, ge=0)
    #: keep only the tokens the training text uses (and the special ones): smaller artifacts, scored as such
    trim_vocab: bool = False
    objectives: list[Literal["accuracy", "latency", "size"]] = Field(
        default_factory=lambda: ["accuracy", "latency", "size"]
    )
    budgets: Budgets = Field(default_factory=Budgets)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    prescreen: PrescreenConfig = Field(default_factory=PrescreenConfig)

    @model_validator(mode="before")
    @classmethod
    def _named_recipe(cls, values: Any) -> Any:
        """`supernet:` as the named recipe's fields overridden by the config's own. Without `recipe:`, a
        config that gives `supernet:` starts from the full (gpu) recipe, one that does not trains the demo."""
        if not isinstance(values, dict):
            return values
        task = values.get("task") if isinstance(values.get("task"), dict) else {}
        try:
            kind = task_of_config(task.get("kind"), task.get("dataset", "tweets"))
        except UnknownTaskError:
            return values  # task.kind's own validator names the choices
        given = values.get("supernet")
        name = values.get("recipe") or ("gpu" if given is not None else "demo")
        if name not in RECIPE_NAMES or (given is not None and not isinstance(given, dict)):
            return values  # the field validators say what is wrong
        try:
            base = named_recipe(kind.name, name)
        except EdgenasError as exc:
            raise ValueError(str(exc)) from None
        values = dict(values)
        values["supernet"] = {**base, **(given or {})}
        return _task_defaults(values, kind)

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, values: list[str]) -> list[str]:
        if not values or len(set(values)) != len(values):
            raise ValueError("needs one or more distinct objectives")
        return values

    @field_validator("supernet")
    @classmethod
    def _recipe(cls, values: dict[str, Any]) -> dict[str, Any]:
        try:
            TrainRecipe.from_dict(values)  # unknown keys and bad values fail here, with the key named
        except EdgenasError as exc:
            raise ValueError(str(exc)) from None
        return values

    @model_validator(mode="after")
    def _task_fits(self) -> "SearchConfig":
        task = self.task.record
        if self.trim_vocab and not task.trims_vocab:
            raise ValueError(f"trim_vocab: works for text classification only, not for {task.name} (task.dataset)")
        if self.task.test is not None and not task.test_file:
            raise ValueError(f"task.test: a {task.name} task is scored on its dev file (task.dev); it has no test file")
        return self

    def train_recipe(self) -> TrainRecipe:
        """The supernet's TrainRecipe (its device: `supernet.device` if set, else the config's `device`)."""
        return TrainRecipe.from_dict({"device": self.device, **self.supernet})

    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]


def load_config(path: str | Path | None = None, recipe: str | None = None) -> SearchConfig:
    """The demo defaults, overridden by a YAML file when given, then by a named `recipe`."""
    raw: dict[str, Any] = {}
    source = Path(path) if path is not None else None
    if source is not None:
        if not source.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
    if recipe is not None:
        raw = {**raw, "recipe": recipe}
    try:
        return SearchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}" if source else _first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}" if where else message
