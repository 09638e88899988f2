"""Where a supernet starts: the teacher fine-tuned on the task (when it is the space's
own pretrained model), else the space's pretrained checkpoint, else random weights;
then, DynaBERT-style, heads, FFN neurons and hidden units are put in order of
importance once, so every leading slice keeps the most important parts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgenas.recipe import TrainRecipe
from edgenas.search.space import SearchSpace
from edgenas.search.training import loop
from edgenas.search.training.supernet import MobileBertSupernet

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits, Tokenizer


def initial_supernet(space: SearchSpace, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe, train_encoded: loop.Encoded,
                     cache_dir: Path, run_dir: Path,
                     progress: bool = True) -> tuple[MobileBertSupernet, dict, np.ndarray | None]:
    """The supernet before training, a record of how it started, and the teacher's logits on the
    training examples `train_encoded` (also written to run_dir, None without a teacher)."""
    from edgenas.search.training.teacher import TEACHER_LOGITS, load_teacher, resolve_checkpoint, teacher_logits

    torch.manual_seed(recipe.seed)
    net = MobileBertSupernet(space.max_arch(), len(tokenizer), splits.num_labels, task=splits.task, family=space.family,
                             layers=space.layers, max_position_embeddings=max(512, recipe.seq_len))
    record: dict = {"init": space.init, "teacher": recipe.teacher, "from": "random weights", "reordered": False}
    soft, start = None, None
    if recipe.teacher:
        teacher, directory = load_teacher(recipe.teacher, splits, tokenizer, recipe, cache_dir, progress)
        soft = teacher_logits(teacher, directory, train_encoded, recipe, progress)
        np.save(run_dir / TEACHER_LOGITS, soft)
        record["teacher_dir"] = directory.name
        if recipe.teacher == space.init:
            start, record["from"] = directory, f"the teacher ({recipe.teacher} fine-tuned on the task)"
    if start is None and space.init:
        start, record["from"] = resolve_checkpoint(space.init), f"pretrained {space.init}"
    if start is not None:
        record["not_loaded"] = net.load_checkpoint(start)
    trained_head = start is not None and not any(key.startswith("exits.") for key in record["not_loaded"])
    if trained_head and not space.family.use_bottleneck and recipe.importance_examples:
        reorder_by_importance(net, splits, tokenizer, recipe)
        record["reordered"] = True
    return net, record, soft


def reorder_by_importance(net: MobileBertSupernet, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe) -> None:
    """Rank heads, neurons and hidden units by the task loss's first-order sensitivity on
    `importance_examples` training texts, then permute the weights most important first."""
    encoded, labels = loop.encode_training(splits, tokenizer, recipe.seq_len, recipe.importance_examples,
                                           recipe.seed + 7)
    lengths = loop.lengths_of(encoded)

    def batches():
        for index in loop.batch_order(lengths, recipe.batch_size, recipe.seed, 0):
            yield (*loop.tensors(encoded, index), torch.from_numpy(labels[index]))

    probe = net.importance(batches(), lambda logits, batch: loop.mixed_loss(logits, batch[3], None, 0.0, 1.0))
    net.reorder(probe.scores["heads"], probe.scores["neurons"], probe.scores["hidden"])
