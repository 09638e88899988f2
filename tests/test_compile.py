"""compile/: TF twin parity, every runtime x mode, the child process, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgenas.compile import CompileError, compile_artifact
from edgenas.compile import _child
from edgenas.compile import converters
from edgenas.compile.torch_model import reference_logits
from edgenas.runtime.backends import BACKENDS, load_runner
from edgenas.runtime.runners import INPUT_KEYS

SEQ = 16
N = 24


BERT_FAMILY = {"use_bottleneck": False, "use_bottleneck_attention": False, "key_query_shared_bottleneck": False,
               "normalization_type": "layer_norm", "trigram_input": False, "hidden_act": "gelu",
               "classifier_activation": True, "num_feedforward_networks": 1, "layer_norm_eps": 1e-12}


def _save_model(path: Path, layers: int, heads: int, qa: bool = False, **family: object) -> Path:
    """A MobileBERT classifier (or QA model) with random weights, NoNorm scales included, saved under path."""
    import torch
    from transformers import MobileBertConfig, MobileBertForQuestionAnswering, MobileBertForSequenceClassification

    torch.manual_seed(0)
    shape = {"vocab_size": 200, "hidden_size": 64, "num_hidden_layers": layers, "intra_bottleneck_size": 32,
             "num_attention_heads": heads, "intermediate_size": 128, "embedding_size": 32,
             "num_feedforward_networks": 2, "num_labels": 2 if qa else 3}
    config = MobileBertConfig(**{**shape, **family})
    model = (MobileBertForQuestionAnswering if qa else MobileBertForSequenceClassification)(config).eval()
    with torch.no_grad():  # NoNorm starts as identity: move it so the twin's norms are really checked
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 layers, 2 heads."""
    return _save_model(tmp_path_factory.mktemp("model"), layers=2, heads=2)


@pytest.fixture(scope="module")
def bert_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BERT family (no bottleneck, LayerNorm, GELU, no trigram input) that the minilm space uses."""
    return _save_model(tmp_path_factory.mktemp("bert"), layers=2, heads=2, **BERT_FAMILY)


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extractive-QA model of the BERT family: logits (batch, 2, seq)."""
    return _save_model(tmp_path_factory.mktemp("qa"), layers=2, heads=2, qa=True, **BERT_FAMILY)


@pytest.fixture(scope="module")
def one_head_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 layer, 1 head: the smallest shape of the search space."""
    return _save_model(tmp_path_factory.mktemp("one_head"), layers=1, heads=1)


def _data(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 200, (N, SEQ))
    mask = np.ones((N, SEQ), np.int64)
    for row in range(N):
        mask[row, rng.integers(4, SEQ + 1):] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[:, SEQ // 2:] = 1
    np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=types, labels=rng.integers(0, 3, N))
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(calibration, check_data) files of shape (N, SEQ)."""
    root = tmp_path_factory.mktemp("data")
    return _data(root / "calib.npz", 1), _data(root / "dev.npz", 2)


FAMILIES = ["tiny_model", "bert_model"]


@pytest.mark.parametrize("model_fixture", [*FAMILIES, "qa_model"])
@pytest.mark.parametrize("int8_mask", [False, True])
def test_tf_twin_matches_torch(int8_mask: bool, model_fixture: str, npz: tuple[Path, Path],
                               request: pytest.FixtureRequest) -> None:
    from edgenas.compile.tf_mobilebert import build_tf_model

    tiny_model = request.getfixturevalue(model_fixture)
    data = dict(np.load(npz[1]))
    fn = build_tf_model(tiny_model, int8_mask=int8_mask).concrete_function(SEQ)
    got = fn(**{k: data[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")})["logits"]
    ref = reference_logits(tiny_model, data)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("family", [{}, BERT_FAMILY, {"use_bottleneck_attention": True},
                                    {"num_feedforward_networks": 3, "classifier_activation": False}])
def test_the_exported_classifier_module_gives_transformers_own_logits(family: dict, npz: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """The module ONNX and ExecuTorch export (its last layer on the first token alone) against the saved
    model's own transformers forward, with padding, for each bottleneck layout."""
    import torch
    from transformers import MobileBertForSequenceClassification

    from edgenas.compile.torch_model import load_model

    model_dir = _save_model(tmp_path, layers=2, heads=2, **family)
    feeds = {k: torch.from_numpy(v.astype(np.int64)) for k, v in np.load(npz[1]).items() if k in INPUT_KEYS}
    with torch.no_grad():
        got = load_model(model_dir)(**feeds)
        expected = MobileBertForSequenceClassification.from_pretrained(model_dir).eval()(**feeds).logits
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize(("model_fixture", "last_rows"), [("tiny_model", 1), ("bert_model", 1), ("qa_model", SEQ)])
def test_a_classifiers_last_layer_computes_the_first_token_alone(model_fixture: str, last_rows: int,
                                                                  npz: tuple[Path, Path], request: pytest.FixtureRequest,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooler reads the first token only, so a classifier's last FFN runs on one row, in the torch
    module that ONNX and ExecuTorch export and in the TF twin; a QA model needs every token's."""
    import torch

    from edgenas.compile import tf_mobilebert
    from edgenas.compile.torch_model import load_model

    model_dir = request.getfixturevalue(model_fixture)
    feeds = {k: v for k, v in np.load(npz[1]).items() if k in INPUT_KEYS}
    module = load_model(model_dir)
    layers = module.model.mobilebert.encoder.layer
    rows: dict[int, int] = {}
    for i in (0, len(layers) - 1):
        layers[i].intermediate.register_forward_hook(lambda _m, args, _out, i=i: rows.__setitem__(i, args[0].shape[1]))
    with torch.no_grad():
        module(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()})
    assert rows == {0: SEQ, len(layers) - 1: last_rows}

    traced: dict[str, int] = {}  # each Linear's rows as the twin is traced
    linear = tf_mobilebert.TFMobileBert._linear

    def recorded(self: object, x: object, name: str) -> object:
        traced.setdefault(name, x.shape[1])
        return linear(self, x, name)

    monkeypatch.setattr(tf_mobilebert.TFMobileBert, "_linear", recorded)
    tf_mobilebert.build_tf_model(model_dir).concrete_function(SEQ)
    intermediate = "mobilebert.encoder.layer.{}.intermediate.dense"
    assert (traced[intermediate.format(0)], traced[intermediate.format(len(layers) - 1)]) == (SEQ, last_rows)


CASES = [(name, mode, "default") for name, backend in BACKENDS.items() for mode in backend.mode_names]
CASES += [("onnxruntime", "fp32", "tf2onnx"), ("onnxruntime", "dynamic_int8", "tf2onnx")]


@pytest.mark.parametrize("model_fixture", FAMILIES)
@pytest.mark.parametrize(("runtime", "mode", "converter"), CASES)
def test_every_mode_converts_and_agrees(runtime: str, mode: str, converter: str, model_fixture: str,
                                        npz: tuple[Path, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The child's own build + check, run in-process so the whole matrix stays fast.
    Both families: the bert one takes the full-int8 GELU and LayerNorm paths."""
    tiny_model = request.getfixturevalue(model_fixture)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    req = {"model_dir": str(tiny_model), "runtime": runtime, "mode": mode, "converter": converter,
           "seq_len": SEQ, "calibration": str(npz[0])}
    artifact = _child.build(req, tmp_path, work)
    record = _child.check(artifact, tiny_model, dict(np.load(npz[1])), SEQ)
    parity = record["parity"]
    assert parity["n"] == N
    if mode == "fp32":
        assert parity["argmax_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-4
    else:  # int8 / fp16 on a tiny random model: close, not exact
        assert parity["argmax_agreement"] >= 0.75 and parity["max_abs_logit_diff"] < 0.1
    assert 0.0 <= record["accuracy"] <= 1.0
    described = converters.converter(runtime).describe(artifact)
    names = sorted(i["name"] for i in described["inputs"])
    assert names == ["attention_mask", "input_ids", "token_type_ids"]
    assert [o["name"] for o in described["outputs"]] == ["logits"]
    if runtime == "onnxruntime":
        assert described["opset"] == (21 if mode == "int4_weights" else 17) and described["dynamic_batch"]
        assert all(i["dtype"] == "int64" and i["shape"] == ["batch", "sequence"] for i in described["inputs"])
    elif runtime == "tflite":  # a float interface takes any length; full int8 keeps the calibrated one
        length = SEQ if mode == "full_int8" else -1
        assert described["dynamic_batch"] and all(i["shape"] == [-1, length] for i in described["inputs"])
    else:  # an ExecuTorch program has fixed shapes
        assert not described["dynamic_batch"]
        assert all(i["dtype"] == "int64" and i["shape"] == [1, SEQ] for i in described["inputs"])


@pytest.mark.parametrize(("mode", "atol"), [("fp32", 1e-4), ("dynamic_int8", 0.1)])
def test_tflite_reads_a_text_at_its_own_length(mode: str, atol: float, bert_model: Path, npz: tuple[Path, Path],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    req = {"model_dir": str(bert_model), "runtime": "tflite", "mode": mode, "converter": "default", "seq_len": SEQ,
           "calibration": str(npz[0])}
    runner = load_runner(_child.build(req, tmp_path, tmp_path))
    data = dict(np.load(npz[1]))
    for row in range(6):
        length = int(data["attention_mask"][row].sum())
        padded = runner.run({k: data[k][row:row + 1] for k in INPUT_KEYS})
        unpadded = runner.run({k: data[k][row:row + 1, :length] for k in INPUT_KEYS})
        np.testing.assert_allclose(unpadded, padded, atol=atol)  # int8: padding moves the activation ranges


def test_compile_artifact_end_to_end_and_cache(tiny_model: Path, npz: tuple[Path, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cache = tmp_path / "cache"
    args = {"seq_len": SEQ, "calibration": npz[0], "check_data": npz[1], "cache_dir": cache}
    first = compile_artifact(tiny_model, "onnxruntime", "static_int8_minmax", **args)
    assert first.path.is_file() and first.path.parent.parent == cache and not first.meta["cached"]
    meta = first.meta
    assert meta["runtime"] == "onnxruntime" and meta["mode"] == "static_int8_minmax"
    assert meta["size_bytes"] == first.path.stat().st_size and len(meta["sha256"]) == 64
    assert meta["versions"]["onnxruntime"] and meta["parity"]["n"] == N and meta["accuracy"] is not None
    assert (first.path.parent / "meta.json").is_file()
    second = compile_artifact(tiny_model, "onnxruntime", "static_int8_minmax", **args)
    assert second.meta["cached"] and second.path == first.path and second.meta["sha256"] == meta["sha256"]
    assert list(cwd.iterdir()) == []  # no <uuid>.data or other strays in the caller's cwd
    assert not [p for p in cache.iterdir() if p.name.startswith(".build-")]


@pytest.mark.parametrize(("runtime", "mode", "converter", "message"), [
    ("onnxruntime", "int4", "default", "unknown onnxruntime mode"),
    ("tflite", "static_int8_minmax", "default", "unknown tflite mode"),
    ("coreml", "fp32", "default", "unknown runtime"),
    ("tflite", "fp32", "tf2onnx", "tf2onnx"),
    ("onnxruntime", "static_int8_entropy", "default", "needs calibration"),
])
def test_bad_requests_raise(runtime: str, mode: str, converter: str, message: str, tiny_model: Path,
                            tmp_path: Path) -> None:
    with pytest.raises(CompileError, match=message):
        compile_artifact(tiny_model, runtime, mode, seq_len=SEQ, cache_dir=tmp_path, converter=converter)


def test_not_a_model_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="save_pretrained"):
        compile_artifact(tmp_path, "onnxruntime", "fp32", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(("fault", "message"), [
    ("crash", "died from SIGSEGV"),
    ("hang", "timed out after 3 s"),
    ("raise", "injected converter failure"),
])
def test_converter_failure_is_contained(fault: str, message: str, tiny_model: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_child.FAULT_ENV, fault)
    cache = tmp_path / "cache"
    with pytest.raises(CompileError, match=message):
        compile_artifact(tiny_model, "onnxruntime", "fp32", seq_len=SEQ, cache_dir=cache, timeout_s=3)
    assert list(cache.iterdir()) == []  # nothing half-built is left, nothing is cached
    assert os.getpid()  # still here


def test_server_is_reused_and_replaced_after_a_crash(tiny_model: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive compiles share one warm converter process; a crash costs one compile, not the next."""
    from edgenas.compile import api

    monkeypatch.delenv(api.SERVER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    args = {"seq_len": SEQ, "cache_dir": tmp_path / "cache", "timeout_s": 300}
    compile_artifact(tiny_model, "onnxruntime", "fp32", **args)
    first = api.server_pid()
    assert first is not None
    compile_artifact(tiny_model, "onnxruntime", "dynamic_int8", **args)
    assert api.server_pid() == first
    monkeypatch.setenv(_child.FAULT_ENV, "crash")
    with pytest.raises(CompileError, match="died from SIGSEGV"):
        compile_artifact(tiny_model, "onnxruntime", "fp16", **args)
    assert api.server_pid() is None
    monkeypatch.delenv(_child.FAULT_ENV)
    artifact = compile_artifact(tiny_model, "onnxruntime", "fp16", **args)
    assert artifact.path.is_file() and not artifact.meta["cached"]
    assert api.server_pid() not in (None, first)
    api.stop_server()
    assert api.server_pid() is None


def test_entropy_calibration_is_not_minmax(tiny_model: Path, npz: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's default Entropy histogram (128/128 bins) silently reproduces MinMax; ours must not."""
    monkeypatch.chdir(tmp_path)
    digests = []
    for mode in ("static_int8_minmax", "static_int8_entropy"):
        out = tmp_path / mode
        out.mkdir()
        req = {"model_dir": str(tiny_model), "runtime": "onnxruntime", "mode": mode, "converter": "default",
               "seq_len": SEQ, "calibration": str(npz[0])}
        digests.append(_child.build(req, out, out).read_bytes())
    assert digests[0] != digests[1]


def _build_and_check(model: Path, runtime: str, mode: str, converter: str, calibration: Path,
                     data: dict[str, np.ndarray], out: Path) -> dict:
    """The child's build + check, in-process, with out as build and work dir."""
    req = {"model_dir": str(model), "runtime": runtime, "mode": mode, "converter": converter,
           "seq_len": SEQ, "calibration": str(calibration)}
    artifact = _child.build(req, out, out)
    return _child.check(artifact, model, data, SEQ)


@pytest.mark.parametrize("mode", ["fp32", "dynamic_int8"])
def test_tf2onnx_with_one_head(mode: str, one_head_model: Path, npz: tuple[Path, Path], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with one head tf2onnx folded the head transposes into reshapes and the
    context reshape copied (batch, heads) for (batch, seq): ORT failed in Reshape."""
    monkeypatch.chdir(tmp_path)
    record = _build_and_check(one_head_model, "onnxruntime", mode, "tf2onnx", npz[0], dict(np.load(npz[1])), tmp_path)
    assert record["parity"]["argmax_agreement"] >= (1.0 if mode == "fp32" else 0.75)
    assert record["parity"]["max_abs_logit_diff"] < (1e-4 if mode == "fp32" else 0.1)


@pytest.mark.parametrize("model_fixture", ["tiny_model", "one_head_model", "bert_model"])
def test_full_int8_runs_on_fully_padded_rows(model_fixture: str, npz: tuple[Path, Path], tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    """Regression: full_int8 masked after the softmax and divided by the quantized kept mass,
    which is exactly zero on a row with every key padded (and rounds to zero when trained
    weights put the mass on padding): TFLite's DIV refused to run. torch attends uniformly there."""
    model = request.getfixturevalue(model_fixture)
    data = dict(np.load(npz[1]))
    data["attention_mask"][:3] = 0  # every key padded, in the checked rows and in the calibration rows
    calibration = dict(np.load(npz[0]))
    calibration["attention_mask"][:3] = 0
    np.savez(tmp_path / "calib.npz", **calibration)
    record = _build_and_check(model, "tflite", "full_int8", "default", tmp_path / "calib.npz", data, tmp_path)
    assert record["parity"]["argmax_agreement"] >= 0.75 and record["parity"]["max_abs_logit_diff"] < 0.1


@pytest.mark.parametrize(("runtime", "mode", "converter"), CASES)
def test_qa_models_convert_with_start_and_end_logits(runtime: str, mode: str, converter: str, qa_model: Path,
                                                     npz: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backend and mode compiles a QA head; its one output holds each token's start and end logits."""
    monkeypatch.chdir(tmp_path)
    data = dict(np.load(npz[1]))
    record = _build_and_check(qa_model, runtime, mode, converter, npz[0], data, tmp_path)
    parity = record["parity"]
    if mode == "fp32":
        assert parity["argmax_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-4
    else:
        assert parity["argmax_agreement"] >= 0.6 and parity["max_abs_logit_diff"] < 0.2
    assert "accuracy" not in record  # QA is scored on answer spans, by the measurement
    artifact = next(tmp_path.glob("model.*"))
    logits = load_runner(artifact).predict_logits({k: data[k] for k in INPUT_KEYS})
    assert logits.shape == (N, 2, SEQ)


def _first_token_outlier_model(path: Path) -> Path:
    """A QA model of the BERT family whose first token leaves layer 0's FFN with one dimension in the
    hundreds where every token's others stay within a few units, as a trained BERT's [CLS] does."""
    import torch
    from transformers import MobileBertForQuestionAnswering

    _save_model(path, layers=2, heads=2, qa=True, **BERT_FAMILY)
    model = MobileBertForQuestionAnswering.from_pretrained(str(path)).eval()
    with torch.no_grad():
        model.mobilebert.embeddings.position_embeddings.weight[0, 5] = 3.0  # the first token: larger in dim 5
        ffn = model.mobilebert.encoder.layer[0]
        ffn.intermediate.dense.weight[7] = 0.0
        ffn.intermediate.dense.weight[7, 5] = 10.0  # a neuron that fires for the first token alone
        ffn.intermediate.dense.bias[7] = -25.0
        ffn.output.dense.weight[11, 7] = 20.0  # and writes about 900 into dimension 11
    model.save_pretrained(path)
    return path


def test_full_int8_keeps_the_first_tokens_outlier_apart(npz: tuple[Path, Path], tmp_path: Path) -> None:
    """Full int8 gives every tensor one scale, so a [CLS] dimension in the hundreds left the other tokens a
    few levels of it (their span logits off by about their own spread); with the first token apart they
    keep their own scale (about 6x closer to the float twin here)."""
    import functools

    import edgenas.compile.tflite as tflite
    from edgenas.compile.tf_mobilebert import build_tf_model
    from edgenas.runtime.backends import TFLITE

    model = _first_token_outlier_model(tmp_path / "model")
    calibration, data = dict(np.load(npz[0])), dict(np.load(npz[1]))
    feeds = {k: data[k] for k in INPUT_KEYS}
    exact = build_tf_model(model).serving_function(SEQ)(**{k: v.astype(np.int32) for k, v in feeds.items()})
    exact = exact["logits"].numpy()
    errors = {}
    for apart in (False, True):
        build = functools.partial(build_tf_model, first_token_apart=apart)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tflite, "build_tf_model", build)
            artifact = tmp_path / f"apart-{apart}.tflite"
            tflite.convert(model, artifact, TFLITE.mode("full_int8"), SEQ, calibration, tmp_path)
        got = load_runner(artifact).predict_logits(feeds)
        real = data["attention_mask"][:, None, 1:].astype(bool).repeat(2, axis=1)
        errors[apart] = float(np.abs(got[..., 1:] - exact[..., 1:])[real].mean())
    assert errors[True] < errors[False] / 3, errors


def _one_matmul(path: Path, weight: np.ndarray, batch: int | str) -> Path:
    """An ONNX graph of one weight MatMul over (batch, 48, 32) tokens."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense")], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 48, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 48, 32])], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_dynamic_int8_gives_the_first_token_its_own_scale(tmp_path: Path) -> None:
    """A [CLS] row far larger than the others (trained BERTs: 6-9x) sets a per-tensor dynamic scale
    that leaves the other tokens a few bits; isolated, they keep their own scale."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgenas.compile.onnx import int8_reduce_range, isolate_first_token

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(32, 32)).astype(np.float32)
    plain = _one_matmul(tmp_path / "plain.onnx", weight, batch=1)
    x = rng.normal(size=(1, 48, 32)).astype(np.float32)
    x[:, 0] *= 40  # the outlier token
    exact = x @ weight
    errors = {}
    for name, source in (("plain", plain), ("isolated", tmp_path / "isolated.onnx")):
        if name == "isolated":
            assert isolate_first_token(plain, source) == 1
        quantized = tmp_path / f"{name}-int8.onnx"
        quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=int8_reduce_range())  # as compile does: 7 bits on x86 without VNNI
        got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        cls_error = np.abs(got[:, 0] - exact[:, 0]).max()
        assert cls_error < 0.03 * np.abs(exact[:, 0]).max()  # [CLS] itself stays close
        errors[name] = float(np.abs(got[:, 1:] - exact[:, 1:]).max())
    assert errors["isolated"] < errors["plain"] / 5, errors


def test_static_int8_calibrates_the_first_token_apart(tmp_path: Path) -> None:
    """Calibrated per-tensor ranges meet the same [CLS] outlier: isolated, the other tokens keep their range.

    The plain graph quantized statically leaves the other tokens an error of about 8 (on outputs up to 19)."""
    import onnxruntime as ort

    from edgenas.compile.onnx import quantize
    from edgenas.runtime.backends import ONNXRUNTIME

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(32, 32)).astype(np.float32)
    plain = _one_matmul(tmp_path / "plain.onnx", weight, batch="batch")

    def texts(n: int) -> np.ndarray:
        x = rng.normal(size=(n, 48, 32)).astype(np.float32)
        x[:, 0] *= 40  # the outlier token
        return x

    calibration, x = {"x": texts(16)}, texts(1)
    exact = x @ weight
    out = tmp_path / "static.onnx"
    quantize(plain, out, ONNXRUNTIME.mode("static_int8_minmax"), tmp_path, calibration)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got[:, 0] - exact[:, 0]).max() < 0.03 * np.abs(exact[:, 0]).max()
    assert np.abs(got[:, 1:] - exact[:, 1:]).max() < 0.05 * np.abs(exact[:, 1:]).max()


def test_per_tensor_int8_gives_the_large_weight_columns_their_own_scale(tmp_path: Path) -> None:
    """A few output columns of a weight far larger than the rest (a trained BERT's FFN down-projection:
    up to 42x) set a per-tensor weight scale that leaves the other columns a few bits; split apart,
    each keeps its own. Both ORT per-tensor modes: dynamic, and static (whose reordering stays float)."""
    import onnxruntime as ort

    from edgenas.compile.onnx import isolate_outlier_columns, quantize
    from edgenas.runtime.backends import ONNXRUNTIME

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(32, 32)).astype(np.float32)
    weight[:, [3, 17]] *= 40  # two residual-stream outlier dimensions
    plain = _one_matmul(tmp_path / "plain.onnx", weight, batch="batch")
    assert isolate_outlier_columns(plain, tmp_path / "split.onnx") == 1
    x = rng.normal(size=(1, 48, 32)).astype(np.float32)
    exact = x @ weight
    normal = np.ones(32, bool)
    normal[[3, 17]] = False
    for mode in ("dynamic_int8", "static_int8_minmax"):
        out = tmp_path / f"{mode}.onnx"
        quantize(plain, out, ONNXRUNTIME.mode(mode), tmp_path, {"x": rng.normal(size=(16, 48, 32)).astype(np.float32)})
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        # without the split, the normal columns' error is about a third of their largest output
        assert np.abs(got - exact)[..., normal].max() < 0.05 * np.abs(exact[..., normal]).max(), mode
        assert np.abs(got - exact)[..., ~normal].max() < 0.03 * np.abs(exact[..., ~normal]).max(), mode


def test_entropy_calibration_keeps_the_rare_large_values_that_carry_the_model(tmp_path: Path) -> None:
    """Entropy calibration clips the tails that hold little of a tensor's mass. Attention probabilities are
    such a tail: mostly near 0, and the few large ones are where a token looks. Clipped at a quarter of
    their range (ORT's search always clips to between a quarter and all of it), the output was off by 70 %
    of its range; kept within 2x of their observed range, by under 1 %."""
    import onnxruntime as ort

    from edgenas.compile.onnx import quantize
    from edgenas.runtime.backends import ONNXRUNTIME

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(32, 32)).astype(np.float32)
    plain = _one_matmul(tmp_path / "plain.onnx", weight, batch="batch")

    def attention(n: int) -> np.ndarray:
        scores = 4 * rng.normal(size=(n, 48, 32))
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)

    x = attention(1)
    exact = x @ weight
    out = tmp_path / "entropy.onnx"
    quantize(plain, out, ONNXRUNTIME.mode("static_int8_entropy"), tmp_path, {"x": attention(16)})
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()


@pytest.mark.parametrize(("machine", "flags", "expected"), [
    ("x86_64", "fpu sse2 avx2 fma", True),  # AVX2 alone: saturating int16 pair sums
    ("x86_64", "fpu avx2 avx512f avx512_vnni", False),
    ("x86_64", "fpu avx2 avx_vnni", False),
    ("aarch64", "fp asimd", False),
    ("x86_64", "", False),  # no flags to read: ORT's default
])
def test_int8_reduce_range_follows_the_cpu(machine: str, flags: str, expected: bool) -> None:
    from edgenas.compile.onnx import int8_reduce_range

    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n" if flags else "processor\t: 0\n"
    assert int8_reduce_range(machine, cpuinfo) is expected


def test_int4_weights_quantize_every_weight_and_the_embeddings(bert_model: Path, npz: tuple[Path, Path],
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """int4_weights leaves no fp32 weight matrix behind: every weight MatMul (the pooler's and the head's Gemm
    too) runs as MatMulNBits, the word embeddings as GatherBlockQuantized, and the artifact is smaller than the
    dynamic int8 one."""
    import onnx

    monkeypatch.chdir(tmp_path)
    built = {}
    for mode in ("int4_weights", "dynamic_int8_per_channel"):
        work = tmp_path / mode
        work.mkdir()
        built[mode] = _child.build({"model_dir": str(bert_model), "runtime": "onnxruntime", "mode": mode,
                                    "converter": "default", "seq_len": SEQ, "calibration": str(npz[0])}, work, work)
    graph = onnx.load(str(built["int4_weights"])).graph
    ops = [node.op_type for node in graph.node]
    weights = {i.name for i in graph.initializer if len(i.dims) == 2 and min(i.dims) > 8 and i.data_type == 1}
    float_matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert ops.count("MatMulNBits") >= 2 * 6 and "GatherBlockQuantized" in ops and not float_matmuls
    assert "Gemm" not in ops  # the pooler and the classifier head are quantized too
    assert built["int4_weights"].stat().st_size < built["dynamic_int8_per_channel"].stat().st_size
