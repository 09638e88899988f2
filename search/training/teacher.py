"""Distillation teachers: the packaged all-MiniLM-L6-v2 (or any local HF
checkpoint) fine-tuned on the task, cached by content hash; and a MiniLM-based
initialisation of the supernet's word embeddings."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel
from transformers.utils import logging as hf_logging

from edgenas.errors import EdgenasError

TEACHER_VERSION = "teacher-v1"
#: std of the PCA-initialised word embeddings: that of a random init (0.02);
#: 0.1 trained worse on tweets (0.626 vs 0.643 dev accuracy, 400 steps)
PCA_EMBEDDING_STD = 0.02
#: recipe fields that shape the teacher's fine-tune
TEACHER_FIELDS = ("teacher_epochs", "teacher_lr", "batch_size", "seq_len", "max_train_examples", "seed")


@contextmanager
def quiet_transformers():
    """Silence transformers' load reports (missing classifier head is expected)."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def teacher_source(spec: str) -> Path:
    """The checkpoint directory of a teacher spec: "minilm" (packaged) or a local HF directory."""
    if spec == "minilm":
        from edgenas.search.data.fetch import teacher_dir

        return teacher_dir()
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise EdgenasError(f"{path}: teacher must be 'minilm' or a local Hugging Face checkpoint directory with config.json")
    return path


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


def teacher_key(source: Path, splits, tokenizer, recipe) -> str:
    """Content hash of (teacher weights, data, vocab, fine-tune recipe)."""
    from edgenas.search.training.train import vocab_hash

    body = {
        "version": TEACHER_VERSION,
        "config": (source / "config.json").read_text(),
        "weights": file_hash(weights_file(source)),
        "data": splits.content_hash(),
        "vocab": vocab_hash(tokenizer),
        "recipe": {name: getattr(recipe, name) for name in TEACHER_FIELDS},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


def load_teacher(spec: str, splits, tokenizer, recipe, cache_dir: Path, progress: bool = True) -> PreTrainedModel:
    """The teacher fine-tuned on `splits` (cached under cache_dir/teacher-<hash>/), in eval mode."""
    source = teacher_source(spec)
    out = Path(cache_dir) / f"teacher-{teacher_key(source, splits, tokenizer, recipe)}"
    if (out / "config.json").is_file():
        with quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(str(out), local_files_only=True).eval()
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(source), num_labels=splits.num_labels, local_files_only=True, ignore_mismatched_sizes=True
            )
    except (OSError, ValueError) as exc:
        raise EdgenasError(f"{source}: cannot load teacher ({str(exc).splitlines()[0]})") from None
    if model.config.vocab_size != len(tokenizer):
        raise EdgenasError(
            f"{source}: teacher vocabulary has {model.config.vocab_size} tokens, the tokenizer {len(tokenizer)}"
        )
    finetune_teacher(model, splits, tokenizer, recipe, progress)
    model.save_pretrained(str(out))
    return model.eval()


def finetune_teacher(model: nn.Module, splits, tokenizer, recipe, progress: bool = True) -> None:
    """Plain cross-entropy fine-tune of a transformers classifier on the training split."""
    from edgenas.search.training.train import (
        _make_optimizer, _tensors, batch_order, descend, encode_split, limit_threads, progress_bar,
    )

    limit_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    encoded, labels = encode_split(tokenizer, splits.train, recipe.seq_len, recipe.max_train_examples, recipe.seed)
    per_epoch = -(-len(labels) // recipe.batch_size)
    total = max(1, int(round(recipe.teacher_epochs * per_epoch)))
    optimizer, scheduler = _make_optimizer(model.parameters(), recipe.teacher_lr, 0.01, total, 0.06)
    model.train()
    step, epoch = 0, 0
    with progress_bar(progress) as bar:
        task = bar.add_task("teacher", total=total, info="")
        while step < total:
            for index in batch_order(len(labels), recipe.batch_size, recipe.seed + 1, epoch):
                if step >= total:
                    break
                ids, mask, types = _tensors(encoded, index)
                logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
                loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels[index]))
                descend(loss, model, optimizer, scheduler)
                step += 1
                bar.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
            epoch += 1
    model.eval()


def minilm_word_embeddings() -> torch.Tensor:
    """MiniLM's (30522, 384) WordPiece embedding table from the packaged checkpoint."""
    from safetensors import safe_open

    from edgenas.search.data.fetch import teacher_dir

    with safe_open(str(teacher_dir() / "model.safetensors"), "pt") as handle:
        for key in ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight"):
            if key in handle.keys():
                return handle.get_tensor(key).float()
    raise EdgenasError(f"{teacher_dir()}: no word embeddings in the packaged MiniLM checkpoint")


def pca_embeddings(table: torch.Tensor, width: int, std: float) -> torch.Tensor:
    """The `width` leading principal components of `table`, scaled to overall std `std`.

    Components come in order of variance, so every leading slice (a narrower
    sub-config's embedding) keeps the most informative directions.
    """
    centred = table - table.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred[torch.randperm(len(centred), generator=torch.Generator().manual_seed(0))[:8000]],
                               full_matrices=False)
    projected = centred @ v[:width].T
    return projected * (std / projected.std())


def minilm_embedding_init(net, vocab_size: int) -> None:
    """Initialise the supernet's word embeddings with a PCA of MiniLM's (same uncased WordPiece vocab)."""
    table = minilm_word_embeddings()
    if table.shape[0] != vocab_size:
        raise EdgenasError(
            f"embedding_init 'minilm' needs the packaged 30522-token WordPiece vocabulary; the tokenizer has {vocab_size}"
        )
    weight = net.mobilebert.embeddings.word_embeddings.weight
    with torch.no_grad():
        weight.copy_(pca_embeddings(table, weight.shape[1], PCA_EMBEDDING_STD))
        weight[0].zero_()  # padding row, as at init
