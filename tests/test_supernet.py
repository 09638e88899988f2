"""Supernet: sub-forward by slicing equals the extracted transformers model; checkpoint loading."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import MobileBertConfig, MobileBertForPreTraining, MobileBertForQuestionAnswering

from edgenas.errors import EdgenasError
from edgenas.search.space import parse_space
from edgenas.search.training.supernet import MobileBertSupernet
from edgenas.types import ArchConfig

SPACE = parse_space(
    """
choices:
  num_hidden_layers: [1, 2, 3]
  hidden_size: [24, 40, 48]
  intra_bottleneck_size: [16, 32]
  num_attention_heads: [1, 2, 4]
  num_feedforward_networks: [1, 2, 3]
  intermediate_size: [20, 40]
  embedding_size: [8, 16]
"""
)
VOCAB = 120


def perturbed(task: str) -> MobileBertSupernet:
    """A supernet whose NoNorms and biases are not at their init (so slicing bugs show)."""
    torch.manual_seed(0)
    net = MobileBertSupernet(SPACE.max_arch(), VOCAB, 3, task=task, max_position_embeddings=32).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return net


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


@pytest.mark.parametrize("task", ["classification", "qa"])
def test_extract_matches_sub_forward_on_random_subconfigs(task: str) -> None:
    net = perturbed(task)
    ids, mask, types = batch()
    rng = random.Random(0)
    archs = [SPACE.max_arch(), SPACE.min_arch()] + [SPACE.sample(rng) for _ in range(10)]
    for arch in archs:
        with torch.no_grad():
            ours = net(ids, mask, types, arch=arch)
            out = net.extract(arch)(input_ids=ids, attention_mask=mask, token_type_ids=types)
        if task == "qa":
            assert isinstance(net.extract(arch), MobileBertForQuestionAnswering)
            torch.testing.assert_close(ours[0], out.start_logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours[1], out.end_logits, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(ours, out.logits, atol=1e-5, rtol=0)


def test_extracted_model_is_standard_and_sub_sized() -> None:
    net = perturbed("classification")
    arch = ArchConfig(2, 40, 16, 2, 2, 20, 8)
    model = net.extract(arch)
    assert not model.training
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intra_bottleneck_size, cfg.true_hidden_size) == (2, 40, 16, 16)
    assert (cfg.num_labels, cfg.vocab_size, cfg.num_feedforward_networks) == (3, VOCAB, 2)
    assert model.mobilebert.embeddings.word_embeddings.weight.shape == (VOCAB, 8)
    # differently sized sub-configs give different logits: the slicing is real
    ids, mask, types = batch()
    with torch.no_grad():
        assert not torch.allclose(net(ids, mask, types), net(ids, mask, types, arch=arch))


def test_rejects_subconfig_larger_than_supernet() -> None:
    net = perturbed("classification")
    with pytest.raises(EdgenasError, match="larger than the supernet"):
        net.extract(ArchConfig(4, 48, 32, 4, 3, 40, 16))


def test_loads_local_mobilebert_checkpoint(tmp_path) -> None:
    """A saved MobileBertForPreTraining of the max size: extract(max) reproduces its encoder."""
    torch.manual_seed(5)
    arch = SPACE.max_arch()
    config = MobileBertConfig(vocab_size=VOCAB, max_position_embeddings=32, **arch.to_dict())
    pretrained = MobileBertForPreTraining(config).eval()
    with torch.no_grad():
        for param in pretrained.parameters():
            param.add_(0.1 * torch.randn_like(param))
    pretrained.save_pretrained(tmp_path / "ckpt")

    net = MobileBertSupernet(arch, VOCAB, 3, max_position_embeddings=32)
    missing = net.load_mobilebert(tmp_path / "ckpt")
    assert missing == ["classifier.weight", "classifier.bias"]  # the task head is new
    model = net.extract(arch)
    ids, mask, types = batch()
    with torch.no_grad():
        ours = model.mobilebert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        theirs = pretrained.mobilebert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=0)


def test_larger_checkpoint_is_sliced_and_wrong_vocab_rejected(tmp_path) -> None:
    torch.manual_seed(6)
    big = ArchConfig(4, 64, 32, 4, 4, 48, 24)
    pretrained = MobileBertForPreTraining(MobileBertConfig(vocab_size=VOCAB, **big.to_dict()))
    pretrained.save_pretrained(tmp_path / "big")
    net = MobileBertSupernet(SPACE.max_arch(), VOCAB, 3)
    net.load_mobilebert(tmp_path / "big")
    source = pretrained.mobilebert.encoder.layer[1].attention.self.value.weight
    torch.testing.assert_close(net.mobilebert.encoder.layer[1].attention.self.value.weight, source[:32, :48])
    # trigram projection: each of the 3 blocks takes the leading columns of the source's block
    ours = net.mobilebert.embeddings.embedding_transformation.weight
    theirs = pretrained.mobilebert.embeddings.embedding_transformation.weight
    torch.testing.assert_close(ours[:, 16:32], theirs[:48, 24:40])
    with pytest.raises(EdgenasError, match="vocabulary of 120 tokens"):
        MobileBertSupernet(SPACE.max_arch(), 99, 3).load_mobilebert(tmp_path / "big")
    with pytest.raises(EdgenasError, match="no model.safetensors"):
        net.load_mobilebert(tmp_path)
