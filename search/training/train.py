"""Supernet training: the sandwich rule over widths, every depth at once through its
own exit, distilled from the teacher's cached logits; cached by content hash,
resumable; and short distilled fine-tunes of one extracted subnet.

Each step trains the max sub-config, the min one and `random_subnets_per_step`
random ones (BigNAS / DynaBERT-style weight sharing), each at the max, the min
and a random depth, or (`paired_depths`) at one depth each: the max width at
the max depth, the min at the min, a random width at a random depth; and
(`shallow_passes`, spread layers) the max width at random depths under the max,
so that shallow exits also train at full width. With first-k
layer selection a sub-config's pass through all its layers yields the logits of
every depth up to it; each depth's loss weighs in proportion to its depth
(PABEE), so the deepest exit keeps the largest share.

A finished run is a directory (see `SupernetDir`): weights as safetensors, a JSON
record of the space, recipe, data and tokenizer hashes and the training
metrics, and the teacher's logits; `edgenas train` writes the same directory to
carry to another machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from edgenas.errors import EdgenasError
from edgenas.recipe import TrainRecipe
from edgenas.search.space import SearchSpace
from edgenas.search.training import loop
from edgenas.search.training.supernet import MobileBertSupernet
from edgenas.search.training.teacher import TEACHER_LOGITS, checkpoint_hash, vocab_hash
from edgenas.types import ArchConfig

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits, Tokenizer

CACHE_VERSION = "supernet-v3"
WEIGHTS = "supernet.safetensors"
RECORD = "supernet.json"


def supernet_key(space: SearchSpace, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe) -> str:
    """Content hash of (space, data, tokenizer vocab, recipe, the weights it starts from): the cache key."""
    body = {
        "version": CACHE_VERSION,
        "space": space.content_hash(),
        "data": splits.content_hash(),
        "vocab": vocab_hash(tokenizer),
        "recipe": recipe.hashed(),
        "task": splits.task,
    }
    # checkpoints are named by path or id: hash their weights too (the packaged MiniLM is pinned)
    local = {spec: checkpoint_hash(spec) for spec in (space.init, recipe.teacher) if spec and spec != "minilm"}
    if local:
        body["files"] = local
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def supernet_dir(space: SearchSpace, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, cache_dir: Path) -> Path:
    """The cache directory of this supernet (it holds a finished run once train_supernet returned)."""
    return Path(cache_dir) / supernet_key(space, splits, tokenizer, recipe)


@dataclass
class TrainingSet:
    """The supernet's training examples, their labels and (when there is a teacher) its logits."""

    encoded: loop.Encoded
    labels: np.ndarray
    soft: np.ndarray | None

    @property
    def lengths(self) -> np.ndarray:
        return loop.lengths_of(self.encoded)


def training_set(splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, run_dir: Path | None = None) -> TrainingSet:
    """The (subsampled) training split at recipe.seq_len, with the teacher's logits if run_dir has them."""
    encoded, labels = loop.encode_training(splits, tokenizer, recipe.seq_len, recipe.max_train_examples, recipe.seed)
    soft = None
    if run_dir is not None and (Path(run_dir) / TEACHER_LOGITS).is_file():
        soft = np.load(Path(run_dir) / TEACHER_LOGITS)
        if len(soft) != len(labels):
            raise EdgenasError(f"{run_dir}: teacher logits for {len(soft)} examples, the training set has {len(labels)}")
    return TrainingSet(encoded, labels, soft)


def train_supernet(
    space: SearchSpace,
    splits: TaskSplits,
    tokenizer: Tokenizer,
    recipe: TrainRecipe,
    cache_dir: Path,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> MobileBertSupernet:
    """Train (or load from cache) the supernet of `space` on `splits`; resumes an interrupted run.

    Cached under cache_dir/<content hash>/; checkpoint.pt exists while training.
    `on_step(step)` is called after each optimizer step (progress hooks).
    """
    from edgenas.search.training.start import initial_supernet

    loop.limit_threads(recipe.threads)
    run_dir = supernet_dir(space, splits, tokenizer, recipe, cache_dir)
    if (run_dir / RECORD).is_file():
        return load_supernet(run_dir)[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    device = loop.resolve_device(recipe.device)
    started = time.perf_counter()
    data = training_set(splits, tokenizer, recipe)
    net, start_record, data.soft = initial_supernet(space, splits, tokenizer, recipe, data.encoded, Path(cache_dir),
                                                    run_dir, progress)
    net.to(device)
    net.mobilebert.embeddings.word_embeddings.weight.requires_grad_(recipe.train_word_embeddings)
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer, scheduler = loop.make_optimizer(trained, recipe.lr, recipe.weight_decay, recipe.steps,
                                               recipe.warmup_fraction)
    state = loop.resume(run_dir / "checkpoint.pt", net, optimizer, scheduler, device)
    step, elapsed, curve = state["step"], state["elapsed"], json.loads(state.get("curve", "[]"))
    held_out = loop.curve_sets(splits, tokenizer, recipe) if recipe.eval_every else {}
    held_out.pop("test", None)  # subnets are chosen on dev: the depth curve is a dev curve
    depths = {f"@{d}": (net, replace(space.max_arch(), num_hidden_layers=d)) for d in space.choices["num_hidden_layers"]}
    if held_out and step == 0:
        curve.append(loop.curve_point(0, 0.0, depths, held_out, device, recipe.precision))
    per_epoch = -(-len(data.labels) // recipe.batch_size)
    with loop.progress_bar(progress) as bar:
        task = bar.add_task("supernet", total=recipe.steps, completed=step, info="")
        while step < recipe.steps:
            epoch, offset = divmod(step, per_epoch)
            for index in loop.batch_order(data.lengths, recipe.batch_size, recipe.seed, epoch)[offset:]:
                if step >= recipe.steps:
                    break
                tick = time.perf_counter()
                loss = sandwich_step(net, space, data, index, recipe, step, device)
                loop.clip_and_step(net, optimizer, scheduler)
                step += 1
                elapsed += time.perf_counter() - tick
                bar.update(task, advance=1, info=f"loss {loss:.3f}")
                if held_out and (step % recipe.eval_every == 0 or step == recipe.steps):
                    curve.append(loop.curve_point(step, elapsed, depths, held_out, device, recipe.precision))
                if step % recipe.checkpoint_every == 0 and step < recipe.steps:
                    loop.save_checkpoint(run_dir / "checkpoint.pt", net, optimizer, scheduler, step, elapsed,
                                         curve=json.dumps(curve))
                if on_step is not None:
                    on_step(step)
    net.cpu().eval()
    record = {
        "start": start_record, "steps": recipe.steps, "steps_per_epoch": per_epoch,
        "train_examples": int(len(data.labels)), "supernet_seconds": round(elapsed, 1),
        "wall_seconds": round(time.perf_counter() - started, 1), "device": loop.device_name(device, recipe.precision),
        "curve": curve,
    }
    save_supernet(net, run_dir, space, splits, tokenizer, recipe, record)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return net


def sandwich_step(net: MobileBertSupernet, space: SearchSpace, data: TrainingSet, index: np.ndarray,
                  recipe: TrainRecipe, step: int, device: torch.device) -> float:
    """One step's gradients (no optimizer step): the max, min and random widths, each at the depths
    `_depths_of` gives it."""
    net.train()
    ids, mask, types = loop.tensors(data.encoded, index, device)
    labels = torch.from_numpy(data.labels[index]).to(device)
    teacher = None if data.soft is None else torch.from_numpy(data.soft[index]).to(device)
    rng = random.Random(f"{recipe.seed}:{step}")  # per-step seed: resume picks the same sub-configs
    depths = sorted(space.choices["num_hidden_layers"])
    # with first-k layers the max width's pass already trains each of its depths: no shallow passes
    shallow = 0 if net.layers == "first" else recipe.shallow_passes
    passes = [("max", space.max_arch()), ("min", space.min_arch())]
    passes += [("random", space.sample(rng)) for _ in range(recipe.random_subnets_per_step)]
    passes += [("shallow", space.max_arch())] * shallow
    seen: set[tuple[ArchConfig, tuple[int, ...]]] = set()
    max_loss, soft, reference = 0.0, teacher, None
    for position, (role, arch) in enumerate(passes):
        run = _depths_of(role, depths, net.layers, recipe.paired_depths, rng)
        arch = replace(arch, num_hidden_layers=max(run))
        if (arch, tuple(run)) in seen:
            continue  # a one-point space (stand-alone training) or a sample that repeats one
        seen.add((arch, tuple(run)))
        hiddens: dict[int, dict[int, torch.Tensor]] | None = {} if recipe.hidden_distill_weight > 0 else None
        with loop.autocast(device, recipe.precision):
            outputs = net.forward_depths(ids, mask, types, arch, run, hiddens=hiddens)
        if soft is None:  # no teacher: the max sub-config teaches the others in place
            soft = outputs[max(run)].detach()
            first = True
        else:
            first = False
        if hiddens is not None and reference is None:  # position 0: the max sub-config at the max depth
            reference = {i: h.detach() for i, h in hiddens[max(run)].items()}
        total = sum(run)
        loss = 0.0
        for depth in run:
            is_max = position == 0 and depth == max(run)
            term = loop.mixed_loss(outputs[depth], labels, None if first and depth == max(run) else soft,
                                   recipe.distill_weight, recipe.temperature)
            if hiddens is not None and not is_max:
                term = term + recipe.hidden_distill_weight * hidden_loss(hiddens[depth], reference, mask)
            loss = loss + (depth / total) * term
        loss.backward()
        if len(seen) == 1:
            max_loss = float(loss.detach())
    return max_loss


def hidden_loss(hiddens: dict[int, torch.Tensor], reference: dict[int, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Relative squared error over real tokens between a pass's hidden states and the max sub-config's after
    the same supernet layers (-1: embeddings), the reference cut to the pass's hidden width (its units come
    first). Relative, so that a NoNorm family's large activations weigh as much as LayerNorm's."""
    weights = (mask.float() / mask.sum())[..., None]
    losses = []
    for index, hidden in hiddens.items():
        target = reference[index][..., : hidden.shape[-1]].float()
        error = ((hidden.float() - target) ** 2 * weights).sum()
        losses.append(error / ((target ** 2 * weights).sum() + 1e-6))
    return sum(losses) / len(losses)


def _depths_of(role: str, depths: list[int], layers: str, paired: bool, rng: random.Random) -> list[int]:
    """The depths a pass trains at this step: its role is the max, the min or a random width, or a
    shallow pass (the max width at a random depth under the max: `shallow_passes`).

    With first-k layers one pass yields every depth up to its last, so all of them train."""
    if role == "shallow":
        last = rng.choice(depths[:-1] or depths)
        chosen = [last]
    elif paired:
        last = depths[-1] if role == "max" else depths[0] if role == "min" else rng.choice(depths)
        chosen = [last]
    else:
        last = depths[-1]
        chosen = sorted({last, depths[0], rng.choice(depths)})
    return [d for d in depths if d <= last] if layers == "first" else chosen


# ---------------------------------------------------------------- the supernet directory


def save_supernet(net: MobileBertSupernet, directory: Path, space: SearchSpace, splits: TaskSplits, tokenizer: Tokenizer,
                  recipe: TrainRecipe, training: dict, dtype: torch.dtype = torch.float32) -> None:
    """Write weights (safetensors) and the JSON record that says what they are."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / (WEIGHTS + ".tmp")))
    os.replace(directory / (WEIGHTS + ".tmp"), directory / WEIGHTS)
    record = {
        "format": 1, "key": supernet_key(space, splits, tokenizer, recipe), "task": net.task,
        "space": space.to_dict(), "space_hash": space.content_hash(), "recipe": recipe.to_dict(),
        "data": {"name": splits.name, "hash": splits.content_hash(), "label_names": list(splits.label_names),
                 "train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "vocab": {"size": net.vocab_size, "hash": vocab_hash(tokenizer)},
        "max_position_embeddings": net.max_position_embeddings, "dtype": str(dtype).removeprefix("torch."),
        "training": training,
    }
    (directory / (RECORD + ".tmp")).write_text(json.dumps(record, indent=2))
    os.replace(directory / (RECORD + ".tmp"), directory / RECORD)


def load_supernet(directory: Path) -> tuple[MobileBertSupernet, dict]:
    """A supernet directory's network (float32, eval mode) and its record."""
    from safetensors.torch import load_file

    from edgenas.search.space import space_from_mapping

    directory = Path(directory)
    if not (directory / RECORD).is_file() or not (directory / WEIGHTS).is_file():
        raise EdgenasError(f"{directory}: not a supernet directory (needs {RECORD} and {WEIGHTS})")
    record = json.loads((directory / RECORD).read_text())
    space = space_from_mapping(record["space"], source=str(directory / RECORD))
    net = MobileBertSupernet(space.max_arch(), record["vocab"]["size"], len(record["data"]["label_names"]),
                             task=record["task"], family=space.family, layers=space.layers,
                             max_position_embeddings=record["max_position_embeddings"])
    state = {k: v.float() for k, v in load_file(str(directory / WEIGHTS)).items()}
    net.load_state_dict(state)
    return net.eval(), record


# ---------------------------------------------------------------- one subnet


def finetune_subnet(
    supernet: MobileBertSupernet,
    arch: ArchConfig,
    data: TrainingSet,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    distill_weight: float = 0.7,
    temperature: float = 2.0,
    seed: int = 0,
    threads: int = 2,
    device: str = "auto",
    precision: str = "auto",
):
    """Extract `arch` and fine-tune it for `steps` steps on labels plus the teacher's logits
    (the max subnet's, computed here, when the training set has none)."""
    loop.limit_threads(threads)
    model = supernet.extract(arch)
    if steps <= 0:
        return model
    target = loop.resolve_device(device)
    torch.manual_seed(seed)
    model.mobilebert.embeddings.word_embeddings.weight.requires_grad_(False)
    optimizer, scheduler = loop.make_optimizer([p for p in model.parameters() if p.requires_grad], lr, 0.01, steps, 0.1)
    model.to(target).train()
    if data.soft is None:
        supernet.to(target)
    step, epoch = 0, 0
    while step < steps:
        for index in loop.batch_order(data.lengths, batch_size, seed, epoch):
            if step >= steps:
                break
            ids, mask, types = loop.tensors(data.encoded, index, target)
            if data.soft is not None:
                soft = torch.from_numpy(data.soft[index]).to(target)
            else:
                with torch.no_grad():
                    supernet.eval()
                    soft = supernet(ids, mask, types)
            with loop.autocast(target, precision):
                logits = loop.logits_of(model(input_ids=ids, attention_mask=mask, token_type_ids=types))
            labels = torch.from_numpy(data.labels[index]).to(target)
            loop.mixed_loss(logits, labels, soft, distill_weight, temperature).backward()
            loop.clip_and_step(model, optimizer, scheduler)
            step += 1
        epoch += 1
    supernet.cpu()
    return model.cpu().eval()
