"""Supernet training: learns, caches by content hash, resumes exactly, fine-tunes, distils from a teacher."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, MobileBertForSequenceClassification

from edgenas.errors import EdgenasError
from edgenas.search.data.datasets import Splits, TextSplit
from edgenas.search.space import parse_space
from edgenas.search.training.train import (
    TrainRecipe,
    encode_split,
    evaluate_accuracy,
    finetune_subnet,
    supernet_key,
    train_supernet,
)

SPACE = parse_space(
    """
choices:
  num_hidden_layers: [1, 2]
  hidden_size: [24, 32]
  intra_bottleneck_size: [8, 16]
  num_attention_heads: [1, 2]
  num_feedforward_networks: [1, 2]
  intermediate_size: [16, 32]
  embedding_size: [8, 16]
"""
)
GOOD = ["great", "love", "nice", "happy", "best"]
BAD = ["awful", "hate", "worst", "sad", "broken"]
FILLER = ["the", "phone", "is", "my", "today", "this", "brand", "service", "a", "was"]
RECIPE = TrainRecipe(epochs=8, batch_size=16, lr=5e-3, seq_len=12, random_subnets_per_step=1, checkpoint_every=5)


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


def make_split(n: int, seed: int) -> TextSplit:
    """Sentiment by keyword: label 1 if a GOOD word appears, else 0."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if i % 2 else BAD))
        texts.append(" ".join(words))
        labels.append(i % 2)
    return TextSplit(texts, np.array(labels, dtype=np.int64))


@pytest.fixture(scope="module")
def splits() -> Splits:
    return Splits(make_split(192, 0), make_split(64, 1), make_split(32, 2), ["neg", "pos"], name="toy")


def state_of(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_trains_evaluates_and_reuses_cache(tmp_path, splits, tokenizer) -> None:
    net = train_supernet(SPACE, splits, tokenizer, RECIPE, tmp_path, progress=False)
    encoded, labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    assert evaluate_accuracy(net, encoded, labels, arch=SPACE.max_arch()) >= 0.9
    assert evaluate_accuracy(net, encoded, labels, arch=SPACE.min_arch()) >= 0.75
    key = supernet_key(SPACE, splits, tokenizer, RECIPE)
    assert (tmp_path / key / "supernet.pt").is_file() and not (tmp_path / key / "checkpoint.pt").exists()

    def never(step: int) -> None:
        raise AssertionError("a cached supernet must not train again")

    again = train_supernet(SPACE, splits, tokenizer, RECIPE, tmp_path, progress=False, on_step=never)
    for key_, value in state_of(net).items():
        assert torch.equal(value, again.state_dict()[key_])
    # inherited-weight accuracy of an extracted standard model equals the supernet's
    arch = SPACE.sample(random.Random(1))
    model = net.extract(arch)
    assert isinstance(model, MobileBertForSequenceClassification)
    assert evaluate_accuracy(model, encoded, labels) == evaluate_accuracy(net, encoded, labels, arch=arch)


def test_cache_key_covers_space_data_vocab_recipe(splits, tokenizer) -> None:
    base = supernet_key(SPACE, splits, tokenizer, RECIPE)
    assert base == supernet_key(SPACE, splits, tokenizer, TrainRecipe(**{**RECIPE.to_dict(), "checkpoint_every": 9}))
    assert base != supernet_key(SPACE, splits, tokenizer, TrainRecipe(**{**RECIPE.to_dict(), "seed": 1}))
    other_data = Splits(make_split(192, 5), splits.dev, splits.test, splits.label_names)
    assert base != supernet_key(SPACE, other_data, tokenizer, RECIPE)
    other_space = parse_space(str(SPACE.to_dict()).replace("'", '"').replace("[16, 32]", "[16, 24, 32]"))
    assert base != supernet_key(other_space, splits, tokenizer, RECIPE)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, splits, tokenizer) -> None:
    recipe = TrainRecipe(**{**RECIPE.to_dict(), "epochs": 1})
    straight = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "a", progress=False)

    def interrupt(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "b", progress=False, on_step=interrupt)
    key = supernet_key(SPACE, splits, tokenizer, recipe)
    assert (tmp_path / "b" / key / "checkpoint.pt").is_file()  # saved at step 5
    seen: list[int] = []
    resumed = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "b", progress=False, on_step=seen.append)
    assert seen[0] == 6 and seen[-1] == 12  # 192 examples / 16 per batch
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=0, rtol=0)


def test_finetune_subnet_returns_trained_transformers_model(tmp_path, splits, tokenizer) -> None:
    net = train_supernet(SPACE, splits, tokenizer, TrainRecipe(**{**RECIPE.to_dict(), "epochs": 1}), tmp_path,
                         progress=False)
    encoded, labels = encode_split(tokenizer, splits.train, RECIPE.seq_len)
    arch = SPACE.min_arch()
    untouched = finetune_subnet(net, arch, encoded, labels, steps=0)
    tuned = finetune_subnet(net, arch, encoded, labels, steps=8, lr=3e-3)
    assert isinstance(tuned, MobileBertForSequenceClassification) and not tuned.training
    assert tuned.config.num_hidden_layers == 1
    moved = tuned.classifier.weight - untouched.classifier.weight
    assert moved.abs().max() > 0
    dev, dev_labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    assert 0.0 <= evaluate_accuracy(tuned, dev, dev_labels) <= 1.0


def test_distils_from_local_teacher_checkpoint(tmp_path, splits, tokenizer) -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForSequenceClassification(config).bert.save_pretrained(tmp_path / "teacher")  # a bare encoder, like MiniLM
    recipe = TrainRecipe(**{**RECIPE.to_dict(), "epochs": 1, "teacher": str(tmp_path / "teacher"),
                            "teacher_epochs": 2, "teacher_lr": 3e-3})
    net = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "cache", progress=False)
    key = supernet_key(SPACE, splits, tokenizer, recipe)
    logits = np.load(tmp_path / "cache" / key / "teacher_logits.npy")
    assert logits.shape == (len(splits.train), 2)
    assert len(list((tmp_path / "cache").glob("teacher-*/config.json"))) == 1
    encoded, labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    assert 0.0 <= evaluate_accuracy(net, encoded, labels) <= 1.0


def test_bad_teacher_and_embedding_init(tmp_path, splits, tokenizer) -> None:
    with pytest.raises(EdgenasError, match="teacher must be 'minilm' or a local"):
        train_supernet(SPACE, splits, tokenizer, TrainRecipe(**{**RECIPE.to_dict(), "teacher": str(tmp_path)}),
                       tmp_path, progress=False)
    with pytest.raises(EdgenasError, match="unknown embedding_init"):
        train_supernet(SPACE, splits, tokenizer, TrainRecipe(**{**RECIPE.to_dict(), "embedding_init": "glove"}),
                       tmp_path, progress=False)
    with pytest.raises(EdgenasError, match="unknown training recipe key"):
        TrainRecipe.from_dict({"epochs": 1, "lr_max": 2})


def test_init_from_local_mobilebert_checkpoint(tmp_path, splits, tokenizer) -> None:
    from transformers import MobileBertConfig, MobileBertForPreTraining

    config = MobileBertConfig(vocab_size=len(tokenizer), **SPACE.max_arch().to_dict())
    pretrained = MobileBertForPreTraining(config)
    pretrained.save_pretrained(tmp_path / "mobilebert")
    recipe = TrainRecipe(**{**RECIPE.to_dict(), "epochs": 0.01, "init_checkpoint": str(tmp_path / "mobilebert"),
                            "lr": 1e-9})
    net = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "cache", progress=False)
    ours = net.mobilebert.encoder.layer[0].attention.self.key.weight
    torch.testing.assert_close(ours, pretrained.mobilebert.encoder.layer[0].attention.self.key.weight,
                               atol=1e-6, rtol=0)


def test_pca_embedding_init_orders_components_by_variance() -> None:
    from edgenas.search.training.teacher import pca_embeddings

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(500, 12, generator=gen) * torch.linspace(3, 0.1, 12)
    out = pca_embeddings(table, 4, std=0.1)
    assert out.shape == (500, 4)
    assert abs(float(out.std()) - 0.1) < 1e-3
    variances = out.var(0)
    assert torch.all(variances[:-1] >= variances[1:])  # a narrower embedding keeps the top components
