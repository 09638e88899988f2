"""Supernet training (sandwich rule + in-place distillation), accuracy with
inherited weights, and short distilled fine-tunes of one subnet.

Each step trains the max subnet on the labels (plus an optional teacher), then
the min subnet and `random_subnets_per_step` random ones on a mix of labels and
the max subnet's soft logits (BigNAS/HAT/AutoTinyBERT-style weight sharing).
Training and accuracy here are for sequence classification; the QA supernet
(supernet.py, task="qa") slices and extracts but is not trained here.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.search.space import SearchSpace
from edgenas.search.training.supernet import MobileBertSupernet
from edgenas.types import ArchConfig

CACHE_VERSION = "supernet-v2"
#: recipe fields that change how training runs but not what it computes
NOT_HASHED = ("checkpoint_every", "threads")
Encoded = dict[str, np.ndarray]


#: the demo recipe's departures from TrainRecipe's defaults
DEMO_RECIPE = {"epochs": 1.0, "lr": 2e-3, "seq_len": 64, "batch_size": 32, "embedding_init": "minilm"}


@dataclass(frozen=True)
class TrainRecipe:
    """How the supernet (and the optional teacher) are trained."""

    epochs: float = 1.0
    max_steps: int | None = None  # cap on optimizer steps (None: epochs decide)
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    seq_len: int = 64
    max_train_examples: int | None = None  # stratification-free seeded subsample of train
    random_subnets_per_step: int = 2
    distill_weight: float = 0.5  # KD share of the loss of non-max subnets (rest: labels)
    temperature: float = 2.0
    teacher: str | None = None  # "minilm", a local HF checkpoint dir, or None
    teacher_weight: float = 0.5  # KD share of the max subnet's loss when a teacher is used
    teacher_epochs: float = 1.0
    teacher_lr: float = 5e-5
    init_checkpoint: str | None = None  # local MobileBERT checkpoint (google/mobilebert-uncased layout)
    embedding_init: str | None = None  # "minilm": PCA of MiniLM's word embeddings (same WordPiece vocab)
    checkpoint_every: int = 100  # steps between resumable checkpoints
    threads: int = 1  # torch intra-op threads; >1 only pays on an otherwise idle machine
    seed: int = 0

    @classmethod
    def demo(cls, **overrides) -> "TrainRecipe":
        """The recipe measured in benchmarks/supernet_quality.py: 1 epoch, MiniLM-PCA embeddings."""
        return cls(**{**DEMO_RECIPE, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def unknown_keys(cls, values: dict) -> list[str]:
        """Keys of `values` that are not recipe fields, sorted."""
        return sorted(set(values) - {f.name for f in fields(cls)})

    @classmethod
    def from_dict(cls, values: dict) -> "TrainRecipe":
        unknown = cls.unknown_keys(values)
        if unknown:
            raise EdgenasError(f"unknown training recipe key(s): {', '.join(unknown)}")
        return cls(**values)


def limit_threads(threads: int = 1) -> None:
    """Run torch on `threads` intra-op threads (at most 2: edge boxes and CI have 2 cores).

    Small matrices gain little from a second thread, and on a busy machine
    OpenMP's spinning makes 2 threads many times slower than 1.
    """
    torch.set_num_threads(max(1, min(threads, 2)))


def vocab_hash(tokenizer) -> str:
    """Hash of the tokenizer's vocabulary (token -> id)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(token for token, _ in items).encode()).hexdigest()[:16]


def recipe_hash(recipe: TrainRecipe) -> dict:
    """The recipe fields that determine the trained weights."""
    return {k: v for k, v in recipe.to_dict().items() if k not in NOT_HASHED}


def supernet_key(space: SearchSpace, splits, tokenizer, recipe: TrainRecipe, task: str = "classification") -> str:
    """Content hash of (space, data, tokenizer vocab, recipe): the supernet cache key."""
    body = {
        "version": CACHE_VERSION,
        "space": space.content_hash(),
        "data": splits.content_hash(),
        "vocab": vocab_hash(tokenizer),
        "recipe": recipe_hash(recipe),
        "task": task,
    }
    # local checkpoints are named by path in the recipe: hash their weights too
    files = {path: weights_hash(path) for path in (recipe.init_checkpoint, recipe.teacher) if path and path != "minilm"}
    if files:
        body["files"] = files
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def weights_hash(directory: str) -> str:
    """Hash of a local checkpoint directory's weights file (empty if it has none: errors come later)."""
    from edgenas.search.training.teacher import file_hash, weights_file

    try:
        return file_hash(weights_file(Path(directory)))
    except EdgenasError:
        return ""


def subsample(texts: list[str], labels: np.ndarray, limit: int | None, seed: int) -> tuple[list[str], np.ndarray]:
    """A seeded random subset of at most `limit` examples (all of them if limit is None)."""
    if limit is None or limit >= len(texts):
        return list(texts), np.asarray(labels)
    picked = np.sort(np.random.default_rng(seed).permutation(len(texts))[:limit])
    return [texts[i] for i in picked], np.asarray(labels)[picked]


def encode_split(tokenizer, split, seq_len: int, limit: int | None = None, seed: int = 0) -> tuple[Encoded, np.ndarray]:
    """Tokenized arrays and labels of a TextSplit (optionally a seeded subsample)."""
    from edgenas.search.data.tokenizer import encode

    texts, labels = subsample(split.texts, split.labels, limit, seed)
    return encode(tokenizer, texts, seq_len), labels.astype(np.int64)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation: KL(teacher || student) on softened logits, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                    reduction="batchmean") * t * t


def mixed_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, weight: float,
               temperature: float) -> torch.Tensor:
    """(1 - weight) * cross-entropy + weight * distillation (plain CE without soft targets)."""
    ce = F.cross_entropy(logits, labels)
    if soft is None or weight <= 0:
        return ce
    return (1 - weight) * ce + weight * kd_loss(logits, soft, temperature)


def _tensors(encoded: Encoded, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(encoded[k][index]) for k in ("input_ids", "attention_mask", "token_type_ids"))


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The shuffled batches of one epoch (a pure function of seed and epoch, so resume is exact)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def descend(loss: torch.Tensor, model: nn.Module, optimizer, scheduler) -> None:
    """One clipped optimizer step on `loss`."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()


def _make_optimizer(params, lr: float, weight_decay: float, total: int, warmup_fraction: float):
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        # linear warm-up then linear decay to zero
        return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar (disabled: nothing printed)."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_supernet(space: SearchSpace, tokenizer, num_labels: int, recipe: TrainRecipe, seq_len: int) -> MobileBertSupernet:
    """A freshly initialised supernet, optionally seeded from a MobileBERT checkpoint or MiniLM embeddings."""
    torch.manual_seed(recipe.seed)
    net = MobileBertSupernet(space.max_arch(), len(tokenizer), num_labels, max_position_embeddings=max(512, seq_len))
    if recipe.init_checkpoint:
        net.load_mobilebert(recipe.init_checkpoint)
    elif recipe.embedding_init == "minilm":
        from edgenas.search.training.teacher import minilm_embedding_init

        minilm_embedding_init(net, len(tokenizer))
    elif recipe.embedding_init is not None:
        raise EdgenasError(f"unknown embedding_init {recipe.embedding_init!r} (use 'minilm' or leave it unset)")
    return net


def train_supernet(
    space: SearchSpace,
    splits,
    tokenizer,
    recipe: TrainRecipe,
    cache_dir: Path,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> MobileBertSupernet:
    """Train (or load from cache) the supernet of `space` on `splits`; resumes an interrupted run.

    Cached under cache_dir/<content hash>/: supernet.pt when done, checkpoint.pt while training.
    `on_step(step)` is called after each optimizer step (progress hooks).
    """
    limit_threads(recipe.threads)
    run_dir = Path(cache_dir) / supernet_key(space, splits, tokenizer, recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / "supernet.pt"
    if final.is_file():
        net = MobileBertSupernet(space.max_arch(), len(tokenizer), splits.num_labels,
                                 max_position_embeddings=max(512, recipe.seq_len))
        net.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        return net.eval()
    net = build_supernet(space, tokenizer, splits.num_labels, recipe, recipe.seq_len)
    encoded, labels = encode_split(tokenizer, splits.train, recipe.seq_len, recipe.max_train_examples, recipe.seed)
    soft_teacher = _teacher_logits(splits, tokenizer, recipe, Path(cache_dir), encoded, run_dir, progress)
    steps_per_epoch = -(-len(labels) // recipe.batch_size)
    total = max(1, int(round(recipe.epochs * steps_per_epoch)))
    if recipe.max_steps is not None:
        total = min(total, recipe.max_steps)
    optimizer, scheduler = _make_optimizer(net.parameters(), recipe.lr, recipe.weight_decay, total, recipe.warmup_fraction)
    step, elapsed = _resume(run_dir / "checkpoint.pt", net, optimizer, scheduler)
    with progress_bar(progress) as bar:
        task = bar.add_task("supernet", total=total, completed=step, info="")
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            for index in batch_order(len(labels), recipe.batch_size, recipe.seed, epoch)[offset:]:
                if step >= total:
                    break
                started = time.perf_counter()
                loss = sandwich_step(net, space, encoded, labels, index, soft_teacher, recipe, step)
                optimizer.step()
                scheduler.step()
                step += 1
                elapsed += time.perf_counter() - started
                bar.update(task, advance=1, info=f"loss {loss:.3f}")
                if step % recipe.checkpoint_every == 0 and step < total:
                    _save_checkpoint(run_dir / "checkpoint.pt", net, optimizer, scheduler, step, elapsed)
                if on_step is not None:
                    on_step(step)
    _atomic_save(net.state_dict(), final)
    meta = {"key": run_dir.name, "space": space.to_dict(), "recipe": recipe.to_dict(), "steps": total,
            "steps_per_epoch": steps_per_epoch, "train_examples": int(len(labels)), "train_seconds": elapsed,
            "seconds_per_epoch": elapsed / total * steps_per_epoch, "data": splits.content_hash()}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return net.eval()


def sandwich_step(net: MobileBertSupernet, space: SearchSpace, encoded: Encoded, labels: np.ndarray,
                  index: np.ndarray, soft_teacher: np.ndarray | None, recipe: TrainRecipe, step: int) -> float:
    """One sandwich-rule step: max, min and random subnets accumulate gradients (no optimizer step)."""
    net.train()
    for param in net.parameters():
        param.grad = None
    ids, mask, types = _tensors(encoded, index)
    y = torch.from_numpy(labels[index])
    teacher = None if soft_teacher is None else torch.from_numpy(soft_teacher[index])
    max_logits = net(ids, mask, types, arch=space.max_arch())
    loss = mixed_loss(max_logits, y, teacher, recipe.teacher_weight, recipe.temperature)
    loss.backward()
    soft = max_logits.detach()
    rng = random.Random(f"{recipe.seed}:{step}")  # per-step seed: resume picks the same subnets
    others = [space.min_arch()] + [space.sample(rng) for _ in range(recipe.random_subnets_per_step)]
    for arch in others:
        if arch == space.max_arch():
            continue  # a one-point space (stand-alone training) or a sample that hit the max
        mixed_loss(net(ids, mask, types, arch=arch), y, soft, recipe.distill_weight, recipe.temperature).backward()
    nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    return float(loss.detach())


def _save_checkpoint(path: Path, net, optimizer, scheduler, step: int, elapsed: float) -> None:
    _atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state()}, path)


def _resume(path: Path, net, optimizer, scheduler) -> tuple[int, float]:
    """Restore a checkpoint if one exists; returns (step, seconds trained so far)."""
    if not path.is_file():
        return 0, 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"])


def _teacher_logits(splits, tokenizer, recipe: TrainRecipe, cache_dir: Path, encoded: Encoded, run_dir: Path,
                    progress: bool) -> np.ndarray | None:
    """The fine-tuned teacher's logits on the training examples (computed once, cached)."""
    if recipe.teacher is None:
        return None
    path = run_dir / "teacher_logits.npy"
    if path.is_file():
        return np.load(path)
    from edgenas.search.training.teacher import load_teacher

    teacher = load_teacher(recipe.teacher, splits, tokenizer, recipe, cache_dir, progress=progress)
    logits = predict_logits(teacher, encoded, progress=progress, label="teacher logits").astype(np.float32)
    np.save(path, logits)
    return logits


def predict_logits(model: nn.Module, encoded: Encoded, arch: ArchConfig | None = None, batch_size: int = 64,
                   progress: bool = False, label: str = "predict") -> np.ndarray:
    """Logits of a supernet (at `arch`) or a transformers classifier, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    n = len(encoded["input_ids"])
    with torch.no_grad(), progress_bar(progress) as bar:
        task = bar.add_task(label, total=n, info="")
        for start in range(0, n, batch_size):
            ids, mask, types = _tensors(encoded, np.arange(start, min(n, start + batch_size)))
            if isinstance(model, MobileBertSupernet):
                logits = model(ids, mask, types, arch=arch)
            else:
                logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            outputs.append(logits.float().numpy())
            bar.update(task, advance=len(ids))
    model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def evaluate_accuracy(model_or_supernet: nn.Module, encoded: Encoded, labels: np.ndarray,
                      arch: ArchConfig | None = None, batch_size: int = 64) -> float:
    """Accuracy of a supernet sub-config (or a transformers classifier) on encoded examples."""
    if len(labels) == 0:
        raise EdgenasError("cannot measure accuracy on an empty split")
    logits = predict_logits(model_or_supernet, encoded, arch=arch, batch_size=batch_size)
    return float((logits.argmax(-1) == np.asarray(labels)).mean())


def finetune_subnet(
    supernet: MobileBertSupernet,
    arch: ArchConfig,
    encoded: Encoded,
    labels: np.ndarray,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    distill_weight: float = 0.5,
    temperature: float = 2.0,
    seed: int = 0,
    threads: int = 1,
):
    """Extract `arch` and fine-tune it for `steps` steps on labels + the max subnet's soft logits."""
    limit_threads(threads)
    model = supernet.extract(arch)
    if steps <= 0:
        return model
    torch.manual_seed(seed)
    optimizer, scheduler = _make_optimizer(model.parameters(), lr, 0.01, steps, 0.1)
    supernet.eval()
    model.train()
    step, epoch = 0, 0
    while step < steps:
        for index in batch_order(len(labels), batch_size, seed, epoch):
            if step >= steps:
                break
            ids, mask, types = _tensors(encoded, index)
            with torch.no_grad():
                soft = supernet(ids, mask, types)
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            loss = mixed_loss(logits, torch.from_numpy(labels[index]), soft, distill_weight, temperature)
            descend(loss, model, optimizer, scheduler)
            step += 1
        epoch += 1
    return model.eval()


def load_trained_meta(cache_dir: Path, key: str) -> dict:
    """The meta.json of a finished supernet run (training time, steps, recipe)."""
    path = Path(cache_dir) / key / "meta.json"
    if not path.is_file():
        raise EdgenasError(f"{path}: no finished supernet run with that key")
    return json.loads(path.read_text())
