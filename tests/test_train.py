"""Supernet training: learns, caches by content hash, resumes exactly, fine-tunes, distils from a teacher."""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from rich.console import Console
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, MobileBertForSequenceClassification

from edgenas.errors import EdgenasError
from edgenas.search.data.datasets import Splits, TextSplit
from edgenas.search.space import parse_space, space_from_mapping
from edgenas.recipe import TrainRecipe
from edgenas.search.training.loop import accuracy as evaluate_accuracy
from edgenas.search.training.loop import LoggedProgress, batch_order, encode_split
from edgenas.search.training.train import finetune_subnet, load_supernet, supernet_key, train_supernet, training_set

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
RECIPE = TrainRecipe(steps=96, batch_size=16, lr=5e-3, seq_len=12, random_subnets_per_step=1, checkpoint_every=5,
                     teacher=None, threads=1, train_word_embeddings=True)


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
    assert (tmp_path / key / "supernet.safetensors").is_file() and not (tmp_path / key / "checkpoint.pt").exists()
    record = json.loads((tmp_path / key / "supernet.json").read_text())
    assert record["space_hash"] == SPACE.content_hash() and record["data"]["hash"] == splits.content_hash()
    assert record["training"]["steps"] == RECIPE.steps and record["training"]["device"].startswith("CPU")

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


def test_budget_is_in_steps_whatever_the_data_size(tmp_path, splits, tokenizer) -> None:
    small = Splits(make_split(40, 0), splits.dev, splits.test, splits.label_names, name="small")
    seen: list[int] = []
    train_supernet(SPACE, small, tokenizer, replace(RECIPE, steps=9), tmp_path, progress=False, on_step=seen.append)
    assert seen == list(range(1, 10))  # 40 examples are 3 batches: the 9 steps run over 3 epochs


def test_batches_are_bucketed_by_length_and_cover_the_epoch() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    batches = batch_order(lengths, 20, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # sorted within buckets: a batch holds texts of similar lengths
    assert [b.tolist() for b in batches] == [b.tolist() for b in batch_order(lengths, 20, seed=1, epoch=0)]


def test_cache_key_covers_space_data_vocab_recipe(splits, tokenizer) -> None:
    base = supernet_key(SPACE, splits, tokenizer, RECIPE)
    assert base == supernet_key(SPACE, splits, tokenizer, replace(RECIPE, checkpoint_every=9, device="cpu",
                                                                      finetune_steps=7))
    assert base != supernet_key(SPACE, splits, tokenizer, replace(RECIPE, seed=1))
    other_data = Splits(make_split(192, 5), splits.dev, splits.test, splits.label_names)
    assert base != supernet_key(SPACE, other_data, tokenizer, RECIPE)
    other_space = space_from_mapping(json.loads(json.dumps(SPACE.to_dict()).replace("[16, 32]", "[16, 24, 32]")))
    assert base != supernet_key(other_space, splits, tokenizer, RECIPE)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, splits, tokenizer) -> None:
    recipe = replace(RECIPE, steps=12)
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
    assert seen[0] == 6 and seen[-1] == 12
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=0, rtol=0)


def test_finetune_subnet_returns_trained_transformers_model(tmp_path, splits, tokenizer) -> None:
    net = train_supernet(SPACE, splits, tokenizer, replace(RECIPE, steps=12), tmp_path, progress=False)
    data = training_set(splits, tokenizer, RECIPE)
    arch = SPACE.min_arch()
    untouched = finetune_subnet(net, arch, data, steps=0)
    tuned = finetune_subnet(net, arch, data, steps=8, lr=3e-3, threads=1, device="cpu")
    assert isinstance(tuned, MobileBertForSequenceClassification) and not tuned.training
    assert tuned.config.num_hidden_layers == 1
    moved = tuned.classifier.weight - untouched.classifier.weight
    assert moved.abs().max() > 0
    dev, dev_labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    assert 0.0 <= evaluate_accuracy(tuned, dev, dev_labels) <= 1.0


def tiny_bert_checkpoint(path, tokenizer) -> None:
    """A bare BERT encoder saved like MiniLM's checkpoint."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForSequenceClassification(config).bert.save_pretrained(path)


BERT_SPACE = """
init: {init}
layers: spread
family: {{use_bottleneck: false, key_query_shared_bottleneck: false, normalization_type: layer_norm,
         trigram_input: false, hidden_act: gelu}}
max: {{num_hidden_layers: 2, hidden_size: 16, num_attention_heads: 2, num_feedforward_networks: 1,
      intermediate_size: 32, embedding_size: 16}}
choices: {{num_hidden_layers: [1, 2], hidden_size: [8, 16], num_feedforward_networks: [1],
          intermediate_size: [16, 32], embedding_size: [8, 16]}}
"""


def test_distils_from_a_teacher_that_is_the_init_and_starts_from_it(tmp_path, splits, tokenizer) -> None:
    tiny_bert_checkpoint(tmp_path / "bert", tokenizer)
    space = parse_space(BERT_SPACE.format(init=tmp_path / "bert"))
    recipe = replace(RECIPE, steps=4, teacher=str(tmp_path / "bert"), teacher_steps=12, teacher_lr=3e-3,
                     importance_examples=32)
    net = train_supernet(space, splits, tokenizer, recipe, tmp_path / "cache", progress=False)
    run = tmp_path / "cache" / supernet_key(space, splits, tokenizer, recipe)
    logits = np.load(run / "teacher_logits.npy")
    assert logits.shape == (len(splits.train), 2)
    teachers = list((tmp_path / "cache").glob("teacher-*/config.json"))
    assert len(teachers) == 1 and list(teachers[0].parent.glob("logits-*.npy"))  # logits cached by the teacher
    start = json.loads((run / "supernet.json").read_text())["training"]["start"]
    assert start["from"].startswith("the teacher") and start["reordered"]
    assert training_set(splits, tokenizer, recipe, run).soft.shape == logits.shape
    loaded, record = load_supernet(run)
    assert record["space"]["layers"] == "spread" and loaded.layer_indices(1) == [1]
    encoded, labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    assert evaluate_accuracy(loaded, encoded, labels) == evaluate_accuracy(net, encoded, labels)


def test_init_from_a_local_checkpoint_without_teacher(tmp_path, splits, tokenizer) -> None:
    tiny_bert_checkpoint(tmp_path / "bert", tokenizer)
    space = parse_space(BERT_SPACE.format(init=tmp_path / "bert"))
    net = train_supernet(space, splits, tokenizer, replace(RECIPE, steps=1, lr=1e-12), tmp_path / "cache",
                         progress=False)
    from transformers import BertModel

    bert = BertModel.from_pretrained(tmp_path / "bert")
    ours = net.mobilebert.encoder.layer[1].attention.self.key.weight
    torch.testing.assert_close(ours, bert.encoder.layer[1].attention.self.key.weight, atol=1e-6, rtol=0)


def test_bad_teacher_and_recipe(tmp_path, splits, tokenizer) -> None:
    with pytest.raises(EdgenasError, match="not a checkpoint directory"):
        train_supernet(SPACE, splits, tokenizer, replace(RECIPE, teacher=str(tmp_path)), tmp_path, progress=False)
    with pytest.raises(EdgenasError, match="unknown training recipe key"):
        TrainRecipe.from_dict({"steps": 1, "lr_max": 2})
    with pytest.raises(EdgenasError, match="steps must be positive"):
        TrainRecipe.from_dict({"steps": 0})
    with pytest.raises(EdgenasError, match="device cuda"):
        if torch.cuda.is_available():
            raise EdgenasError("device cuda: (a CUDA machine: nothing to check)")
        train_supernet(SPACE, splits, tokenizer, replace(RECIPE, device="cuda"), tmp_path, progress=False)


def test_init_from_local_mobilebert_checkpoint(tmp_path, splits, tokenizer) -> None:
    from transformers import MobileBertConfig, MobileBertForPreTraining

    config = MobileBertConfig(vocab_size=len(tokenizer), **SPACE.max_arch().to_dict())
    pretrained = MobileBertForPreTraining(config)
    pretrained.save_pretrained(tmp_path / "mobilebert")
    space = replace(SPACE, init=str(tmp_path / "mobilebert"))
    net = train_supernet(space, splits, tokenizer, replace(RECIPE, steps=1, lr=1e-12), tmp_path / "cache",
                         progress=False)
    ours = net.mobilebert.encoder.layer[0].attention.self.key.weight
    torch.testing.assert_close(ours, pretrained.mobilebert.encoder.layer[0].attention.self.key.weight,
                               atol=1e-6, rtol=0)


def test_cpu_training_is_repeatable(tmp_path, splits, tokenizer) -> None:
    """The result depends on the recipe, not the run: two trainings agree to floating-point noise."""
    recipe = replace(RECIPE, steps=6)
    a = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path / "a", progress=False)
    b = train_supernet(SPACE, splits, tokenizer, replace(recipe, device="cpu"), tmp_path / "b", progress=False)
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, atol=1e-6, rtol=0)


def test_bf16_training_lands_within_noise_of_fp32(tmp_path, splits, tokenizer) -> None:
    """bf16 autocast keeps fp32 master weights: a short training learns as well as the fp32 one."""
    encoded, labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    scores = {}
    for precision in ("fp32", "bf16"):
        net = train_supernet(SPACE, splits, tokenizer, replace(RECIPE, precision=precision), tmp_path / precision,
                             progress=False)
        assert all(p.dtype == torch.float32 for p in net.parameters())
        scores[precision] = evaluate_accuracy(net, encoded, labels, arch=SPACE.max_arch())
    assert scores["fp32"] >= 0.9 and abs(scores["bf16"] - scores["fp32"]) <= 0.1
    record = json.loads(next((tmp_path / "bf16").glob("*/supernet.json")).read_text())
    assert record["training"]["device"].endswith("bf16 autocast")


def test_precision_auto_follows_the_cpu_instructions(monkeypatch) -> None:
    from edgenas.search.training import loop

    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(loop, "native_bf16", lambda device, native=native: native)
        assert loop.uses_bf16(cpu, "auto") is native
        assert loop.uses_bf16(cpu, "bf16") and not loop.uses_bf16(cpu, "fp32")
    with pytest.raises(EdgenasError, match="no bf16 autocast on mps"):
        loop.uses_bf16(torch.device("mps"), "bf16")
    with pytest.raises(EdgenasError, match="precision must be one of auto, bf16, fp32"):
        TrainRecipe.from_dict({"precision": "fp8"})


def test_precision_auto_follows_a_timed_probe_where_the_cpu_has_bf16(monkeypatch, tmp_path) -> None:
    from edgenas.search.training import bf16_probe

    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path))
    stored = tmp_path / bf16_probe.PROBE_FILE

    def verdict(instructions: bool) -> bool:
        monkeypatch.setattr(bf16_probe, "has_bf16_instructions", lambda: instructions)
        bf16_probe.bf16_pays_on_cpu.cache_clear()
        return bf16_probe.bf16_pays_on_cpu()

    assert not verdict(False) and not stored.exists()  # no instructions: fp32, nothing timed
    stored.write_text("{not json")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with torch.inference_mode():  # the first caller may be an evaluation
        verdict(True)  # an unreadable record: timed again, and stored
    assert torch.equal(torch.rand(3), expected)  # a training's random stream did not move
    probe = json.loads(stored.read_text())[bf16_probe.machine_key()]
    assert probe["fp32_s"] > 0 and probe["bf16_s"] > 0
    for speedup, pays in ((0.63, False), (1.05, False), (1.74, True)):
        stored.write_text(json.dumps({bf16_probe.machine_key(): {**probe, "speedup": speedup}}))
        assert verdict(True) is pays
    bf16_probe.bf16_pays_on_cpu.cache_clear()


def test_supernet_records_each_depths_learning_curve(tmp_path, splits, tokenizer) -> None:
    recipe = replace(RECIPE, steps=10, eval_every=4)
    train_supernet(SPACE, splits, tokenizer, recipe, tmp_path, progress=False)
    curve = json.loads(next(tmp_path.glob("*/supernet.json")).read_text())["training"]["curve"]
    assert [point["step"] for point in curve] == [0, 4, 8, 10]
    assert all(0.0 <= point[f"dev@{depth}"] <= 1.0 for point in curve for depth in (1, 2))
    assert supernet_key(SPACE, splits, tokenizer, recipe) == supernet_key(SPACE, splits, tokenizer,
                                                                 replace(recipe, eval_every=0, precision="bf16"))


def test_teacher_resumes_after_interruption_to_the_same_weights(tmp_path, splits, tokenizer) -> None:
    from edgenas.search.training.teacher import finetune_teacher

    recipe = replace(RECIPE, teacher_steps=14, teacher_lr=3e-3, checkpoint_every=4, eval_every=5)

    def classifier() -> BertForSequenceClassification:
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32,
                                                         max_position_embeddings=32))

    cpu = torch.device("cpu")
    straight = classifier()
    done = finetune_teacher(straight, splits, tokenizer, recipe, cpu, progress=False)

    def interrupt(step: int) -> None:
        if step == 10:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        finetune_teacher(classifier(), splits, tokenizer, recipe, cpu, False, checkpoint, on_step=interrupt)
    seen: list[int] = []
    resumed = classifier()
    again = finetune_teacher(resumed, splits, tokenizer, recipe, cpu, False, checkpoint, on_step=seen.append)
    assert seen == list(range(9, 15))  # from the checkpoint of step 8
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=0, rtol=0)
    assert [point["step"] for point in again["curve"]] == [5, 10, 14] == [point["step"] for point in done["curve"]]
    assert again["curve"][-1]["test"] == done["curve"][-1]["test"]


def test_paired_depths_train_each_width_at_one_depth(tmp_path, splits, tokenizer) -> None:
    """Paired: the max width at the max depth, the min at the min, a random width at a random depth;
    unpaired: every width at the max, the min and a random depth (first-k: every depth up to its last)."""
    from edgenas.search.training.train import _depths_of

    rng, depths = random.Random(0), [1, 2, 3, 4]
    assert [_depths_of(role, depths, "spread", True, rng) for role in ("max", "min")] == [[4], [1]]
    assert len(_depths_of("random", depths, "spread", True, rng)) == 1
    assert {1, 4} <= set(_depths_of("random", depths, "spread", False, rng))
    assert _depths_of("min", depths, "first", True, rng) == [1] and _depths_of("max", depths, "first", True, rng) == depths
    recipe = replace(RECIPE, paired_depths=True)
    assert supernet_key(SPACE, splits, tokenizer, recipe) != supernet_key(SPACE, splits, tokenizer, RECIPE)
    net = train_supernet(SPACE, splits, tokenizer, recipe, tmp_path, progress=False)
    encoded, labels = encode_split(tokenizer, splits.dev, RECIPE.seq_len)
    for depth in (1, 2):
        assert evaluate_accuracy(net, encoded, labels, arch=replace(SPACE.max_arch(), num_hidden_layers=depth)) >= 0.8


def test_shallow_passes_train_the_max_width_under_its_max_depth(splits, tokenizer) -> None:
    """`shallow_passes`: each adds a pass of the max width at a random depth under the max (spread layers;
    first-k layers already train every depth in the max pass); only a non-zero count changes the cache key."""
    from edgenas.search.training.loop import tensors
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.train import _depths_of, sandwich_step

    rng = random.Random(0)
    assert {_depths_of("shallow", [1, 2, 3], "spread", True, rng)[0] for _ in range(50)} == {1, 2}
    assert _depths_of("shallow", [2], "spread", True, rng) == [2]  # one depth: nothing under it
    assert "shallow_passes" not in RECIPE.hashed()
    recipe = replace(RECIPE, paired_depths=True, random_subnets_per_step=0, shallow_passes=2)
    assert supernet_key(SPACE, splits, tokenizer, recipe) != supernet_key(SPACE, splits, tokenizer, RECIPE)
    data = training_set(splits, tokenizer, recipe)
    for layers, expected in (("spread", 3), ("first", 2)):
        net = MobileBertSupernet(SPACE.max_arch(), len(tokenizer), 2, layers=layers, max_position_embeddings=32)
        runs = []
        forward = net.forward_depths
        net.forward_depths = lambda *args, **kw: runs.append((args[3], list(args[4]))) or forward(*args, **kw)
        sandwich_step(net, SPACE, data, np.arange(8), recipe, 0, torch.device("cpu"))
        # max and min, and with spread layers one shallow pass: with depths 1 and 2 both are at depth 1, run once
        assert len(runs) == expected
        for arch, run in runs[2:]:
            assert replace(arch, num_hidden_layers=2) == SPACE.max_arch() and run == [1]
    with pytest.raises(ValueError, match="shallow_passes"):
        TrainRecipe(shallow_passes=-1)


def test_hidden_state_distillation_matches_each_pass_to_the_max_subnet(tmp_path, splits, tokenizer) -> None:
    """DynaBERT's hidden-state loss: zero for the max sub-config itself, positive for a narrower pass; a
    sandwich step with it brings the narrower pass closer to the max than the same step without; only a
    non-zero weight changes the cache key."""
    from edgenas.search.training.loop import tensors
    from edgenas.search.training.train import hidden_loss, sandwich_step

    assert "hidden_distill_weight" not in RECIPE.hashed()  # supernets cached before the field keep their keys
    recipe = replace(RECIPE, hidden_distill_weight=1.0)
    assert supernet_key(SPACE, splits, tokenizer, recipe) != supernet_key(SPACE, splits, tokenizer, RECIPE)
    start = train_supernet(SPACE, splits, tokenizer, RECIPE, tmp_path, progress=False)
    data = training_set(splits, tokenizer, RECIPE)
    index = np.arange(16)
    ids, mask, types = tensors(data.encoded, index)
    narrow = replace(SPACE.min_arch(), num_hidden_layers=2)

    def mismatch(net) -> float:
        full: dict[int, dict[int, torch.Tensor]] = {}
        small: dict[int, dict[int, torch.Tensor]] = {}
        with torch.no_grad():
            net.eval().forward_depths(ids, mask, types, SPACE.max_arch(), [1, 2], hiddens=full)
            net.forward_depths(ids, mask, types, narrow, [2], hiddens=small)
        assert sorted(full[2]) == [-1, 0, 1] and sorted(full[1]) == [-1, 0]
        assert float(hidden_loss(full[2], full[2], mask)) == 0.0
        assert float(hidden_loss(full[1], full[2], mask)) == 0.0  # first-k: depth 1's layers are depth 2's first
        return float(hidden_loss(small[2], full[2], mask))

    def after_one_step(weight: float) -> float:
        net = load_supernet(tmp_path / supernet_key(SPACE, splits, tokenizer, RECIPE))[0]
        torch.manual_seed(0)  # the same dropout in both steps
        sandwich_step(net, SPACE, data, index, replace(RECIPE, hidden_distill_weight=weight), 0, torch.device("cpu"))
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
        return mismatch(net)

    assert mismatch(start) > 0.0
    assert after_one_step(1.0) < after_one_step(0.0)
    with pytest.raises(ValueError, match="hidden_distill_weight"):
        TrainRecipe(hidden_distill_weight=-1.0)


def test_a_progress_bar_in_a_log_prints_a_line_each_tenth_from_where_it_resumed():
    log = io.StringIO()
    with LoggedProgress(console=Console(file=log, width=100)) as bar:
        task = bar.add_task("teacher", total=40, completed=20, info="")
        for step in range(20):
            bar.update(task, advance=1, info=f"loss {step:.3f}")
    lines = [line for line in log.getvalue().splitlines() if " elapsed" in line]
    assert [line.split(":")[0] for line in lines] == [f"teacher {n}/40 loss {n - 21:.3f}" for n in (24, 28, 32, 36, 40)]
    assert "left" in lines[0] and "left" not in lines[-1]
