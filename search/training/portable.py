"""Portable supernets: train where the accelerator is, search where the device is.

`write_portable` copies a trained supernet directory in fp16 (weights, the record of
its space, recipe, data and vocabulary hashes, the teacher's logits) with a README
saying what it holds. `adopt_portable` checks such a directory against a search
config and installs it in the supernet cache, so the search and the export use it
as if it had been trained here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgenas.errors import EdgenasError
from edgenas.recipe import NOT_HASHED, TrainRecipe
from edgenas.search.training.teacher import TEACHER_LOGITS
from edgenas.search.training.train import RECORD, WEIGHTS, load_supernet, save_supernet, supernet_key

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits, Tokenizer


def write_portable(run_dir: Path, out: Path, space, splits: TaskSplits, tokenizer: Tokenizer, recipe: TrainRecipe) -> int:
    """Write the supernet of run_dir to `out` in fp16; returns the directory's size in bytes."""
    net, record = load_supernet(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_supernet(net, out, space, splits, tokenizer, recipe, record["training"], dtype=torch.float16)
    if (run_dir / TEACHER_LOGITS).is_file():
        shutil.copyfile(run_dir / TEACHER_LOGITS, out / TEACHER_LOGITS)
    (out / "README.md").write_text(_readme(json.loads((out / RECORD).read_text())))
    return sum(path.stat().st_size for path in out.iterdir() if path.is_file())


def _readme(record: dict) -> str:
    training = record["training"]
    return "\n".join([
        f"# edgenas supernet `{record['key']}`", "",
        f"- `{WEIGHTS}`: the weight-sharing supernet of space `{record['space']['name']}` "
        f"(max sub-config: {record['space']['max']}), {record['dtype']}.",
        f"- `{RECORD}`: the space, the training recipe, the data ({record['data']['name']}, hash "
        f"{record['data']['hash']}) and vocabulary (hash {record['vocab']['hash']}) it was trained on, and how.",
        f"- `{TEACHER_LOGITS}`: the teacher's logits on the training examples (distillation in `edgenas export`)"
        if training.get("start", {}).get("teacher") else "- no teacher: export distils from the max subnet",
        "", f"Trained {training['steps']} steps on {training['device']} in {training['wall_seconds']:.0f} s.", "",
        "Use: `edgenas search --config SAME_CONFIG --supernet THIS_DIR`.", "",
    ])


def adopt_portable(directory: Path, config, space, splits: TaskSplits, tokenizer: Tokenizer, cache_dir: Path):
    """Check a portable supernet against the search's space, data and tokenizer, install it in the
    cache, and return the config with the directory's training recipe (so every later step finds it)."""
    from edgenas.search.training.teacher import vocab_hash

    directory = Path(directory)
    if not (directory / RECORD).is_file() or not (directory / WEIGHTS).is_file():
        raise EdgenasError(f"{directory}: not a supernet directory (needs {RECORD} and {WEIGHTS})")
    record = json.loads((directory / RECORD).read_text())
    checks = [("space", record["space_hash"], space.content_hash()),
              ("data", record["data"]["hash"], splits.content_hash()),
              ("tokenizer vocabulary", record["vocab"]["hash"], vocab_hash(tokenizer))]
    for what, theirs, ours in checks:
        if theirs != ours:
            raise EdgenasError(f"{directory}: its {what} (hash {theirs}) is not this config's ({ours}); "
                               "train it with the same config (`edgenas train`)")
    hashed = {k: v for k, v in record["recipe"].items() if k not in NOT_HASHED}
    adopted = config.model_copy(update={"supernet": hashed})
    key = supernet_key(space, splits, tokenizer, adopted.train_recipe())
    if key != record["key"]:
        raise EdgenasError(f"{directory}: its key {record['key']} does not follow from its record ({key}); "
                           "the directory was changed or written by another edgenas version")
    target = Path(cache_dir) / key
    if not (target / RECORD).is_file():
        tmp = target.with_name(target.name + ".adopting")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(directory, tmp)
        shutil.rmtree(target, ignore_errors=True)  # a half-trained run of the same key
        tmp.rename(target)
    return adopted
