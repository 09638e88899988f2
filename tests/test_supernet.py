"""Supernet: sub-forward by slicing equals the extracted transformers model; checkpoint loading."""

from __future__ import annotations

import random
from dataclasses import replace

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
            torch.testing.assert_close(ours[:, 0], out.start_logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours[:, 1], out.end_logits, atol=1e-5, rtol=0)
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
    missing = net.load_checkpoint(tmp_path / "ckpt")
    assert all(".classifier." in key for key in missing) and len(missing) == 2 * arch.num_hidden_layers  # new heads
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
    net.load_checkpoint(tmp_path / "big")
    source = pretrained.mobilebert.encoder.layer[1].attention.self.value.weight
    torch.testing.assert_close(net.mobilebert.encoder.layer[1].attention.self.value.weight, source[:32, :48])
    # trigram projection: each of the 3 blocks takes the leading columns of the source's block
    ours = net.mobilebert.embeddings.embedding_transformation.weight
    theirs = pretrained.mobilebert.embeddings.embedding_transformation.weight
    torch.testing.assert_close(ours[:, 16:32], theirs[:48, 24:40])
    with pytest.raises(EdgenasError, match="vocabulary of 120 tokens"):
        MobileBertSupernet(SPACE.max_arch(), 99, 3).load_checkpoint(tmp_path / "big")
    with pytest.raises(EdgenasError, match="no model.safetensors"):
        net.load_checkpoint(tmp_path)


# ---------------------------------------------------------------- a BERT-style family (MiniLM written as MobileBERT)

BERT_SPACE = parse_space(
    """
family: {use_bottleneck: false, key_query_shared_bottleneck: false, normalization_type: layer_norm,
         trigram_input: false, hidden_act: gelu}
layers: spread
max: {num_hidden_layers: 4, hidden_size: 32, num_attention_heads: 4, num_feedforward_networks: 1,
      intermediate_size: 48, embedding_size: 32}
choices:
  num_hidden_layers: [1, 2, 3, 4]
  hidden_size: [16, 24, 32]
  num_feedforward_networks: [1]
  intermediate_size: [24, 48]
  embedding_size: [8, 16, 32]
"""
)


def tiny_bert(path, seed: int = 3) -> "BertModel":
    """A random BERT (perturbed norms and biases) saved like a Hugging Face checkpoint."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=48, max_position_embeddings=64)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(path)
    return model


def bert_supernet(path) -> MobileBertSupernet:
    net = MobileBertSupernet(BERT_SPACE.max_arch(), VOCAB, 3, family=BERT_SPACE.family, layers="spread",
                             max_position_embeddings=64).eval()
    net.load_checkpoint(path)
    return net


def test_bert_checkpoint_loads_exactly_into_the_max_subnet(tmp_path) -> None:
    bert = tiny_bert(tmp_path / "bert")
    net = bert_supernet(tmp_path / "bert")
    ids, mask, types = batch()
    with torch.no_grad():
        ours = net.hidden_state(ids, mask, types)
        theirs = bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        # MobileBERT builds two LayerNorms without layer_norm_eps (default 1e-5, BERT 1e-12): with those eps
        # matched in BERT too, the two are the same function
        assert (ours - theirs)[mask.bool()].abs().max() < 1e-2
        bert.embeddings.LayerNorm.eps = 1e-5
        for layer in bert.encoder.layer:
            layer.output.LayerNorm.eps = 1e-5
        theirs = bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)


def test_bert_family_extracts_standard_models_on_random_subconfigs(tmp_path) -> None:
    tiny_bert(tmp_path / "bert")
    net = bert_supernet(tmp_path / "bert")
    with torch.no_grad():
        for head in net.exits:  # distinct heads per depth
            head.classifier.weight.add_(0.1 * torch.randn_like(head.classifier.weight))
    ids, mask, types = batch()
    rng = random.Random(0)
    for arch in [BERT_SPACE.max_arch(), BERT_SPACE.min_arch()] + [BERT_SPACE.sample(rng) for _ in range(10)]:
        model = net.extract(arch)
        cfg = model.config
        assert not cfg.use_bottleneck and cfg.true_hidden_size == arch.hidden_size == cfg.intra_bottleneck_size
        assert cfg.num_attention_heads == arch.hidden_size // 8 and cfg.hidden_act == "gelu"
        with torch.no_grad():
            torch.testing.assert_close(net(ids, mask, types, arch=arch),
                                       model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                       atol=1e-5, rtol=0)


def test_svd_embedding_slices_are_the_best_low_rank_tables(tmp_path) -> None:
    bert = tiny_bert(tmp_path / "bert")
    net = bert_supernet(tmp_path / "bert")
    table = bert.embeddings.word_embeddings.weight.detach()
    full = net.folded_embeddings(BERT_SPACE.max_arch())
    torch.testing.assert_close(full, table, atol=1e-5, rtol=0)  # full rank: the pretrained table itself
    errors = []
    for width in (8, 16):
        arch = replace(BERT_SPACE.max_arch(), embedding_size=width)
        errors.append(float((net.folded_embeddings(arch) - table).norm()))
        singular = torch.linalg.svdvals(table)
        # Eckart-Young: the error of the best rank-k approximation
        torch.testing.assert_close(torch.tensor(errors[-1]), singular[width:].norm(), atol=1e-4, rtol=1e-4)
    assert errors[0] > errors[1]


def test_importance_reorder_keeps_the_function_and_ranks_heads(tmp_path) -> None:
    tiny_bert(tmp_path / "bert")
    net = bert_supernet(tmp_path / "bert")
    ids, mask, types = batch()
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        before = net(ids, mask, types)
    probe = net.importance([(ids, mask, types, labels)], lambda logits, b: torch.nn.functional.cross_entropy(logits, b[3]))
    assert probe.scores["heads"].shape == (4, 4) and probe.scores["hidden"].shape == (5, 32)
    net.reorder(probe.scores["heads"], probe.scores["neurons"], probe.scores["hidden"])
    with torch.no_grad():
        torch.testing.assert_close(net(ids, mask, types), before, atol=1e-5, rtol=0)
    again = net.importance([(ids, mask, types, labels)], lambda logits, b: torch.nn.functional.cross_entropy(logits, b[3]))
    for layer in range(4):  # after the reorder, the most important head comes first
        torch.testing.assert_close(again.scores["heads"][layer], probe.scores["heads"][layer].sort(descending=True).values,
                                   atol=1e-5, rtol=1e-3)


def test_spread_layers_keep_the_top_layer() -> None:
    net = MobileBertSupernet(BERT_SPACE.max_arch(), VOCAB, 3, family=BERT_SPACE.family, layers="spread")
    assert [net.layer_indices(d) for d in (1, 2, 3, 4)] == [[3], [1, 3], [0, 2, 3], [0, 1, 2, 3]]
    first = MobileBertSupernet(BERT_SPACE.max_arch(), VOCAB, 3, family=BERT_SPACE.family, layers="first")
    assert first.layer_indices(2) == [0, 1]


def test_a_bottleneck_wiring_transformers_lacks_is_refused() -> None:
    from edgenas.types import Family

    with pytest.raises(EdgenasError, match="no other wiring"):
        MobileBertSupernet(SPACE.max_arch(), VOCAB, 3, family=Family(key_query_shared_bottleneck=False))


@pytest.mark.registry
def test_packaged_minilm_loads_exactly_into_the_minilm_space() -> None:
    """The real all-MiniLM-L6-v2: the max subnet's last hidden state is BertModel's, up to the eps difference."""
    from transformers import BertModel

    from edgenas.search.space import load_space
    from edgenas.search.training.teacher import resolve_checkpoint

    space = load_space("minilm")
    path = resolve_checkpoint("minilm")
    net = MobileBertSupernet(space.max_arch(), 30522, 3, family=space.family, layers=space.layers).eval()
    assert all(key.startswith("exits.") for key in net.load_checkpoint(path))  # only the task heads are new
    bert = BertModel.from_pretrained(str(path)).eval()
    ids, mask, types = torch.randint(1000, 30000, (2, 12)), torch.ones(2, 12, dtype=torch.long), torch.zeros(2, 12, dtype=torch.long)
    with torch.no_grad():
        bert.embeddings.LayerNorm.eps = 1e-5
        for layer in bert.encoder.layer:
            layer.output.LayerNorm.eps = 1e-5
        torch.testing.assert_close(net.hidden_state(ids, mask, types), bert(input_ids=ids, attention_mask=mask,
                                                                            token_type_ids=types).last_hidden_state,
                                   atol=1e-4, rtol=0)
