"""How the teacher and the supernet are trained: a recipe whose budgets are optimizer steps.

Shared by the config schema (edgenas.config) and the training code
(edgenas.search.training), so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from edgenas.errors import EdgenasError

DEVICES = ("auto", "cpu", "cuda", "mps")
#: auto: bf16 autocast where it pays (CUDA; CPUs with AVX512-BF16 or AMX where a timed probe finds it faster), else fp32
PRECISIONS = ("auto", "bf16", "fp32")
#: fields that change where or how fast training runs, or what the export does after it, not the weights trained
NOT_HASHED = ("checkpoint_every", "threads", "device", "precision", "eval_every", "finetune_steps",
              "finetune_lr")
#: fields added after supernets were cached, with the value every earlier run trained with: hashed only when
#: set to something else, so adding a field never retrains a cached supernet
LATER_FIELDS = {"hidden_distill_weight": 0.0, "shallow_passes": 0}


TRAIN_SEQ_LEN = 64  # the default longest training sequence (TrainRecipe.seq_len)

#: the named training budgets (`recipe:` in a config, `--recipe` on the command line)
RECIPE_NAMES = ("demo", "cpu", "gpu")

#: each named budget's departures from TrainRecipe's defaults (which are the `gpu` recipe), per task
#: kind. Wall times on 2 cores in bf16 autocast: see README.
NAMED_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "classification": {
        # minutes: the README demo. The teacher sees 16,000 texts once: with 3,200 its fine-tuned students only
        # tied tuned TF-IDF, which trains on all 29,757
        "demo": {"steps": 20, "teacher_steps": 500, "teacher_lr": 1.5e-4, "seq_len": 48, "max_train_examples": 16000,
                 "random_subnets_per_step": 1, "importance_examples": 256},
        # about an hour of training on 2 cores: step counts from the measured learning curves
        "cpu": {"steps": 1200, "teacher_steps": 1860, "seq_len": 64, "random_subnets_per_step": 1, "eval_every": 250,
                # export: 800 steps lift small models 0.5-1 test point over 300 and 1,500 most another 0.6-0.8,
                # but a 40-trial front's export then heads for 58 minutes, not 37; 800 fits the 75 (RESULTS 1).
                # 2e-4 against 1e-4 over the 40-trial front's 27 exported artifacts: +0.21 dev and +0.09 test points
                # on average; 3 to 5 layers gain up to 0.8 test, 6 layers move -0.4 to +0.1 (RESULTS 1)
                "finetune_steps": 800, "finetune_lr": 2e-4},
        "gpu": {},
    },
    "qa": {
        # windows of 256 tokens, about 13 minutes on 2 cores
        "demo": {"steps": 20, "teacher_steps": 150, "teacher_lr": 1e-4, "seq_len": 256, "batch_size": 16,
                 "max_train_examples": 2400, "random_subnets_per_step": 1, "importance_examples": 64},
        # windows of 256 tokens, 30,000 questions: teacher steps from its measured F1 curve; paired depths
        # cut a sandwich step from about 20 s to a third of the passes; two shallow passes a step lift the
        # inherited F1 of depths 3-5 by 4-14 points at 250 steps (README)
        "cpu": {"steps": 500, "teacher_steps": 800, "teacher_lr": 1e-4, "seq_len": 256, "max_train_examples": 30000,
                "random_subnets_per_step": 2, "paired_depths": True, "shallow_passes": 2, "importance_examples": 256,
                "eval_every": 250, "checkpoint_every": 25},  # lose minutes, not an hour
        "gpu": {"seq_len": 256},
    },
}
#: a sentence pair trains like a single text, at twice its length (two texts and a [SEP] between them)
NAMED_RECIPES["pair"] = {name: {**fields, "seq_len": 2 * fields.get("seq_len", TRAIN_SEQ_LEN)}
                         for name, fields in NAMED_RECIPES["classification"].items()}


def named_recipe(task_kind: str, name: str) -> dict[str, Any]:
    """The TrainRecipe fields a named budget sets for a task kind; EdgenasError if it has none."""
    recipes = NAMED_RECIPES[task_kind]
    if name not in recipes:
        raise EdgenasError(f"recipe {name!r}: none for {task_kind} (choose from {', '.join(recipes)})")
    return dict(recipes[name])


@dataclass(frozen=True)
class TrainRecipe:
    """Budgets in optimizer steps (not epochs), so a small dataset still gets a real training."""

    steps: int = 2500  # supernet optimizer steps
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    seq_len: int = TRAIN_SEQ_LEN  # longest sequence; batches are bucketed by length and cut to their longest text
    max_train_examples: int | None = None  # a seeded subsample of train (None: all of it)
    random_subnets_per_step: int = 2  # besides the max and the min sub-config
    #: True: each width trains at one depth (the max width at the max depth, the min at the min, a random
    #: width at a random depth: BigNAS' sandwich over whole configs), a third of the passes with spread
    #: layers. False: every width at the max, the min and a random depth.
    paired_depths: bool = False
    #: extra passes a step of the max width, each at a random depth under the max (spread layers only: with
    #: first-k layers the max width's own pass trains every depth), for shallow exits that paired depths
    #: otherwise train only at the min width or when a random width draws them
    shallow_passes: int = 0
    distill_weight: float = 0.7  # share of the loss taken by distillation (the rest: labels)
    temperature: float = 2.0
    #: weight of DynaBERT's hidden-state distillation: each smaller pass's hidden state after each of its
    #: layers matches (relative squared error over real tokens) the max sub-config's after the same layer
    hidden_distill_weight: float = 0.0
    teacher: str | None = "minilm"  # "minilm", a local HF checkpoint dir, or None (distil from the max subnet)
    teacher_steps: int = 4650  # 5 epochs of the tweets' 29,757 training texts at batch 32
    teacher_lr: float = 8e-5
    train_word_embeddings: bool = False  # the big table stays as pretrained (and training is ~40 % faster on CPU)
    importance_examples: int = 512  # training examples that rank heads, neurons and hidden units
    finetune_steps: int = 300  # `edgenas export`'s default: each exported sub-config's own distillation steps
    finetune_lr: float = 1e-4  # the peak learning rate of that distillation
    device: str = "auto"  # auto: CUDA, then MPS, then the CPU
    precision: str = "auto"  # auto, bf16 or fp32 autocast (master weights stay fp32)
    checkpoint_every: int = 200  # steps between resumable checkpoints
    eval_every: int = 0  # steps between learning-curve points on held-out examples (0: none)
    threads: int = 2  # torch intra-op threads on the CPU
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("teacher_steps", "importance_examples", "eval_every", "shallow_passes", "finetune_steps",
                     "hidden_distill_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        for name in ("lr", "teacher_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must lie in [0, 1], got {self.distill_weight}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hashed(self) -> dict[str, Any]:
        """The fields that determine the trained weights."""
        return {k: v for k, v in self.to_dict().items()
                if k not in NOT_HASHED and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    @classmethod
    def unknown_keys(cls, values: dict) -> list[str]:
        """Keys of `values` that are not recipe fields, sorted."""
        return sorted(set(values) - {f.name for f in fields(cls)})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainRecipe":
        """A recipe from plain values, type-checked by pydantic; EdgenasError names the bad key."""
        from pydantic import TypeAdapter, ValidationError

        unknown = cls.unknown_keys(values)
        if unknown:
            known = ", ".join(sorted(f.name for f in fields(cls)))
            raise EdgenasError(f"unknown training recipe key '{unknown[0]}' (known: {known})")
        try:
            return TypeAdapter(cls).validate_python(dict(values))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise EdgenasError(f"training recipe: {where + ': ' if where else ''}{message}") from None
