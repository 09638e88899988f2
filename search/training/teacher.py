"""The distillation teacher: a pretrained checkpoint (the packaged all-MiniLM-L6-v2 by
default) fine-tuned on the task, cached by content hash, and its logits over the
training examples, computed once and cached beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from edgenas.errors import EdgenasError
from edgenas.recipe import TrainRecipe
from edgenas.runtime.tasks import get_task
from edgenas.search.training import loop

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits, Tokenizer

TEACHER_VERSION = "teacher-v2"
#: the teacher's logits over the training examples, saved beside the supernet that distils from them
TEACHER_LOGITS = "teacher_logits.npy"
#: recipe fields that shape the teacher's fine-tune
TEACHER_FIELDS = ("teacher_steps", "teacher_lr", "batch_size", "seq_len", "max_train_examples", "weight_decay",
                  "warmup_fraction", "train_word_embeddings", "seed")


@contextmanager
def quiet_transformers():
    """Silence transformers' load reports (a missing classifier head is expected)."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def resolve_checkpoint(spec: str) -> Path:
    """The directory of a checkpoint spec: "minilm" (packaged), a local directory, or a hub id.

    A hub id is fetched by huggingface_hub (users with network only); nothing else
    in edgenas reaches a model hub."""
    if spec == "minilm":
        from edgenas.search.data.fetch import teacher_dir

        return teacher_dir()
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        if not (path / "config.json").is_file():
            raise EdgenasError(f"{path}: not a checkpoint directory with config.json (or 'minilm', or a hub id "
                               "like google/mobilebert-uncased)")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:  # no network, unknown id, gated model: one line
        raise EdgenasError(f"cannot fetch {spec!r} from the Hugging Face hub ({str(exc).splitlines()[0][:200]}); "
                           "pass a local checkpoint directory instead") from None


def weights_file(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise EdgenasError(f"{directory}: no model.safetensors or pytorch_model.bin")


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hash(spec: str) -> str:
    """Hash of a checkpoint's config and weights (what a cache keyed on it must see)."""
    source = resolve_checkpoint(spec)
    return hashlib.sha256(((source / "config.json").read_text() + file_hash(weights_file(source))).encode()).hexdigest()[:20]


def vocab_hash(tokenizer: Tokenizer) -> str:
    """Hash of the tokenizer's vocabulary (token -> id)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(token for token, _ in items).encode()).hexdigest()[:16]


def teacher_key(spec: str, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe) -> str:
    """Content hash of (teacher weights, data, vocab, fine-tune recipe)."""
    body = {
        "version": TEACHER_VERSION,
        "checkpoint": checkpoint_hash(spec),
        "data": splits.content_hash(),
        "vocab": vocab_hash(tokenizer),
        "recipe": {name: getattr(recipe, name) for name in TEACHER_FIELDS},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def teacher_dir(spec: str, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, cache_dir: Path) -> Path:
    """Where the fine-tuned teacher of this spec, data and recipe is (or will be) cached."""
    return Path(cache_dir) / f"teacher-{teacher_key(spec, splits, tokenizer, recipe)}"


def load_teacher(spec: str, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, cache_dir: Path,
                 progress: bool = True) -> tuple[PreTrainedModel, Path]:
    """The teacher fine-tuned on `splits` (trained once, then from the cache) and its directory, in eval mode."""
    out = teacher_dir(spec, splits, tokenizer, recipe, cache_dir)
    auto = getattr(transformers, get_task(splits.task).teacher_class)
    if (out / "config.json").is_file():
        with quiet_transformers():
            return auto.from_pretrained(str(out), local_files_only=True).eval(), out
    source = resolve_checkpoint(spec)
    try:
        with quiet_transformers():
            model = auto.from_pretrained(
                str(source), num_labels=splits.num_labels, local_files_only=True, ignore_mismatched_sizes=True
            )
    except (OSError, ValueError) as exc:
        raise EdgenasError(f"{source}: cannot load teacher ({str(exc).splitlines()[0]})") from None
    if model.config.vocab_size != len(tokenizer):
        raise EdgenasError(
            f"{source}: teacher vocabulary has {model.config.vocab_size} tokens, the tokenizer {len(tokenizer)}"
        )
    device = loop.resolve_device(recipe.device)
    partial = out.with_name(out.name + ".partial")  # checkpoints of an unfinished fine-tune
    partial.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    curve = finetune_teacher(model, splits, tokenizer, recipe, device, progress, partial / "checkpoint.pt")
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    record = {"source": spec, "steps": recipe.teacher_steps, "lr": recipe.teacher_lr,
              "device": loop.device_name(device, recipe.precision), **curve,
              "wall_seconds_this_run": round(time.perf_counter() - started, 1)}
    (tmp / "teacher.json").write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)
    shutil.rmtree(partial, ignore_errors=True)
    return model.eval(), out


def finetune_teacher(model: torch.nn.Module, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, device: torch.device,
                     progress: bool = True, checkpoint: Path | None = None,
                     on_step: Callable[[int], None] | None = None) -> dict:
    """Plain cross-entropy fine-tune of a transformers classifier (or QA model) for recipe.teacher_steps steps.

    With `checkpoint`, it saves there every recipe.checkpoint_every steps and resumes from it. Returns
    the seconds trained and, every recipe.eval_every steps, the learning curve on held-out examples."""
    loop.limit_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    encoded, labels = loop.encode_training(splits, tokenizer, recipe.seq_len, recipe.max_train_examples, recipe.seed)
    lengths = loop.lengths_of(encoded)
    total = recipe.teacher_steps
    model.to(device).train()
    model.get_input_embeddings().weight.requires_grad_(recipe.train_word_embeddings)
    optimizer, scheduler = loop.make_optimizer([p for p in model.parameters() if p.requires_grad], recipe.teacher_lr,
                                               recipe.weight_decay, total, recipe.warmup_fraction)
    state = loop.resume(checkpoint, model, optimizer, scheduler, device)
    step, elapsed, curve = state["step"], state["elapsed"], json.loads(state.get("curve", "[]"))
    held_out = loop.curve_sets(splits, tokenizer, recipe) if recipe.eval_every else {}
    per_epoch = -(-len(labels) // recipe.batch_size)
    with loop.progress_bar(progress) as bar:
        task = bar.add_task("teacher", total=total, completed=step, info="")
        while step < total:
            epoch, offset = divmod(step, per_epoch)
            for index in loop.batch_order(lengths, recipe.batch_size, recipe.seed + 1, epoch)[offset:]:
                if step >= total:
                    break
                tick = time.perf_counter()
                ids, mask, types = loop.tensors(encoded, index, device)
                with loop.autocast(device, recipe.precision):
                    logits = loop.logits_of(model(input_ids=ids, attention_mask=mask, token_type_ids=types))
                loss = loop.mixed_loss(logits, torch.from_numpy(labels[index]).to(device), None, 0.0, 1.0)
                loss.backward()
                loop.clip_and_step(model, optimizer, scheduler)
                step += 1
                elapsed += time.perf_counter() - tick
                bar.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
                if held_out and (step % recipe.eval_every == 0 or step == total):
                    curve.append(loop.curve_point(step, elapsed, {"": (model, None)}, held_out, device,
                                                  recipe.precision))
                    model.train()
                if checkpoint is not None and step % recipe.checkpoint_every == 0 and step < total:
                    loop.save_checkpoint(checkpoint, model, optimizer, scheduler, step, elapsed,
                                         curve=json.dumps(curve))
                if on_step is not None:
                    on_step(step)
    model.cpu().eval()
    return {"train_seconds": round(elapsed, 1), "curve": curve}


def teacher_logits(model: torch.nn.Module, directory: Path, encoded: loop.Encoded, recipe: TrainRecipe,
                   progress: bool = True) -> np.ndarray:
    """The teacher's logits on `encoded`, cached in its directory by a hash of the inputs."""
    digest = hashlib.sha256()
    for key in loop.INPUTS:
        digest.update(np.ascontiguousarray(encoded[key]).tobytes())
    path = Path(directory) / f"logits-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    device = loop.resolve_device(recipe.device)
    model.to(device)
    logits = loop.predict_logits(model, encoded, device=device, progress=progress, label="teacher logits",
                                precision=recipe.precision)
    model.cpu()
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, logits)
    os.replace(tmp, path)
    return logits
