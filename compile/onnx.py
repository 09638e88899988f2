"""torch (or the TF twin, via tf2onnx) -> ONNX, then ONNX Runtime optimisation and quantization.

Runs inside the compile child process (see edgenas.compile.api); every function
writes into the directory it is given and nothing else.
"""

from __future__ import annotations

import logging
import platform
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgenas.compile.errors import CompileError
from edgenas.runtime.backends import QuantMode
from edgenas.runtime.runners import INPUT_KEYS as INPUT_NAMES

#: ONNX opset for both exporters (tf2onnx 1.17 defaults to 17 too), so the two paths compare like for like
OPSET = 17
#: Static int8: quantize the matmuls (where the time goes) and the embedding gathers; leaving
#: the mask add, softmax and NoNorm in float keeps padded rows exact.
_STATIC_OPS = ["MatMul", "Gemm", "Gather"]
_INPUT_AXES = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}


#: CPU flags of the instructions that sum u8 x s8 products in 32 bits (VNNI, AMX)
_INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def int8_reduce_range(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether ORT's dynamic int8 should keep weights to 7 bits on this machine: an x86 CPU without
    VNNI adds u8 x s8 product pairs in saturating int16 (vpmaddubsw), which 8-bit weights overflow.

    Measured on an AMD EPYC (Zen 2, AVX2 only): one MatMul's worst error was 4.0-5.2 with 8-bit
    weights, with or without the first token isolated, and 0.29 isolated with 7-bit ones."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False  # no flags to read (not Linux): ORT's default
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(flags) and not _INT8_DOT_FLAGS & set(flags)


def convert(model_dir: Path, out: Path, mode: QuantMode, seq_len: int, calibration: dict[str, np.ndarray] | None,
            work: Path, exporter: str = "default") -> None:
    """Export (torch, or the TF twin through tf2onnx), check and optimise, then quantize into out."""
    raw, fp32 = work / "raw.onnx", work / "fp32.onnx"
    if exporter == "tf2onnx":
        export_tf2onnx(model_dir, raw)
    else:
        export_torch(model_dir, raw, seq_len)
    check_and_optimize(raw, fp32)
    quantize(fp32, out, mode, work, calibration)


def describe(artifact: Path) -> dict[str, Any]:
    """Inputs, outputs and opset as the graph declares them."""
    import onnx

    model = onnx.load(str(artifact), load_external_data=False)

    def io(values: Any) -> list[dict[str, Any]]:
        return [{"name": v.name,
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                 "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}
                for v in values]

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"inputs": io(model.graph.input), "outputs": io(model.graph.output), "opset": int(opset),
            "dynamic_batch": True}


def export_torch(model_dir: Path, out: Path, seq_len: int) -> None:
    """Export with the legacy TorchScript exporter (dynamo=False).

    Why not dynamo: on MobileBERT both exporters give graphs that ORT runs
    equally fast and quantizes the same, but the legacy one exports 10x faster
    (0.6-3.6 s vs 10-50 s), and export time is paid on every trial.
    """
    import torch

    from edgenas.compile.torch_model import load_model

    model = load_model(model_dir, attn_implementation="eager")
    dummy = tuple(torch.ones((2, seq_len), dtype=torch.long) for _ in INPUT_NAMES)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(model, dummy, str(out), dynamo=False, opset_version=OPSET,
                          input_names=list(INPUT_NAMES), output_names=["logits"],
                          dynamic_axes=_INPUT_AXES | {"logits": _output_axes(model_dir)}, do_constant_folding=True)


def _output_axes(model_dir: Path) -> dict[int, str]:
    """The logits' dynamic axes: the batch, and for a span model's per-token logits the tokens too."""
    from edgenas.runtime.tasks import task_of_model

    return {0: "batch", 2: "sequence"} if task_of_model(model_dir).spans else {0: "batch"}


def export_tf2onnx(model_dir: Path, out: Path) -> None:
    """Convert the TF twin of the model with tf2onnx (int64 inputs, dynamic batch and sequence)."""
    import tensorflow as tf
    import tf2onnx

    from edgenas.compile.tf_mobilebert import build_tf_model

    fn = build_tf_model(model_dir, for_onnx=True).serving_function(None, tf.int64)
    specs = [tf.TensorSpec([None, None], tf.int64, name=n) for n in INPUT_NAMES]
    tf2onnx.convert.from_function(fn, input_signature=specs, opset=OPSET, output_path=str(out))


def check_and_optimize(src: Path, out: Path) -> None:
    """onnx.checker, then save ORT's basic-level (portable) graph optimisation of src to out."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(src))
    opts = ort.SessionOptions()
    # Basic = constant folding and redundant-node removal; higher levels emit
    # hardware-specific fused ops that make a file unportable.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    _normalize_io(out)


def _normalize_io(path: Path) -> None:
    """Name the single output 'logits' and the dynamic axes batch/sequence, whichever exporter ran."""
    import onnx

    model = onnx.load(str(path))
    old = model.graph.output[0].name
    if old != "logits":  # tf2onnx names it after the TF tensor
        for node in model.graph.node:
            node.output[:] = ["logits" if o == old else o for o in node.output]
        model.graph.output[0].name = "logits"
    for value in model.graph.input:
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", "sequence")):
            dim.dim_param = name
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(path))


class _Calibration:
    """onnxruntime CalibrationDataReader over the graph inputs' arrays of an .npz, one row at a time
    (integer ids as int64)."""

    def __init__(self, arrays: dict[str, np.ndarray], names: list[str]) -> None:
        def row(name: str, i: int) -> np.ndarray:
            value = arrays[name][i:i + 1]
            return value.astype(np.int64) if value.dtype.kind in "iu" else value

        self._rows: Iterator[dict[str, np.ndarray]] = (
            {n: row(n, i) for n in names} for i in range(len(arrays[names[0]]))
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._rows, None)


def quantize(fp32: Path, out: Path, mode: QuantMode, work: Path, calibration: dict[str, np.ndarray] | None) -> None:
    """Write the ORT artifact for one quantization mode (fp32 is copied as is)."""
    import shutil

    if mode.weights == "fp32":
        shutil.copyfile(fp32, out)
        return
    if mode.weights == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # keep_io_types: int64 ids in and float32 logits out, as the runtime expects
        onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
        return
    if mode.weights == "int4":
        quantize_int4_weights(fp32, out)
        return

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # auto_merge: MobileBERT's symbolic shapes do not infer without it
    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), auto_merge=True, skip_optimization=False)
    isolated = work / "isolated.onnx"
    if mode.per_channel:
        isolate_first_token(pre, isolated)
    else:
        split = work / "columns.onnx"
        isolate_outlier_columns(pre, split)
        isolate_first_token(split, isolated)
    if not mode.needs_calibration:
        quantize_dynamic(str(isolated), str(out), weight_type=QuantType.QInt8, per_channel=mode.per_channel,
                         reduce_range=int8_reduce_range())
        return
    if calibration is None:
        raise CompileError(f"mode {mode.name} needs calibration data (an .npz of training samples)")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[mode.calibration]
    ranges = work / "ranges.json"
    _calibrate(isolated, calibration, method, work, ranges)
    # U8 activations / S8 weights in QDQ: ORT's recommended x86 format.
    quantize_static(str(isolated), str(out), None, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, op_types_to_quantize=_STATIC_OPS,
                    calibration_cache_path=str(ranges), nodes_to_exclude=_float_gathers(isolated))


#: int4 weights are scaled in blocks of this many values of one output column (one embedding row): small
#: blocks keep a trained BERT's few large weights from costing their neighbours their precision
INT4_BLOCK = 32
INT4_OPSET = 21  # the first opset with an int4 tensor type (GatherBlockQuantized's weights)


def quantize_int4_weights(fp32: Path, out: Path, block_size: int = INT4_BLOCK) -> None:
    """Weight-only int4: every weight MatMul becomes ORT's MatMulNBits and the word-embedding Gather its
    GatherBlockQuantized, symmetric, with an fp32 scale per block; activations and the rest stay fp32."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # int4 tensors need opset 21 and IR 10: convert properly rather than let the quantizer relabel the graph
    model = version_converter.convert_version(onnx.load(str(fp32)), INT4_OPSET)
    model.ir_version = max(model.ir_version, 10)
    gemms_as_matmuls(model)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line a weight
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                                     op_types_to_quantize=("MatMul", "Gather"),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)


def gemms_as_matmuls(model: Any) -> None:
    """Rewrite each Gemm with a constant weight (the pooler, the classifier) as MatMul + Add, in place, so a
    MatMul-only weight quantizer reaches it too."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, replaced = [], set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        name = f"{node.name or node.output[0]}/weight"
        graph.initializer.append(numpy_helper.from_array(weight.T.copy() if attrs.get("transB", 0) else weight, name))
        bias = node.input[2] if len(node.input) > 2 else ""
        product = f"{node.output[0]}/product" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}/matmul"))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}/bias"))
        replaced.add(node.input[1])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    for stale in [weights[name] for name in replaced - used]:  # not saved beside their transposed copies
        graph.initializer.remove(stale)


#: a weight's output column whose largest |weight| is this many times the median column's gets a MatMul of
#: its own in per-tensor int8 (the QA teacher's FFN down-projections: 5-42x, every other weight under 3x)
OUTLIER_COLUMN_RATIO = 4.0
_REORDER = "reorder"  # the name every column-reordering Gather starts with (it stays in float)


def _weight_matmuls(graph: Any) -> Iterator[tuple[int, Any]]:
    """(index, node) of each MatMul of a token sequence (rank 3) by a weight initializer."""
    weights = {init.name for init in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.input)
             if v.type.tensor_type.HasField("shape")}
    for index, node in enumerate(graph.node):
        if node.op_type == "MatMul" and node.input[1] in weights and ranks.get(node.input[0]) == 3:
            yield index, node


def isolate_outlier_columns(src: Path, dst: Path, ratio: float = OUTLIER_COLUMN_RATIO) -> int:
    """Give the few output columns of a weight that are far larger than the rest a MatMul of their own,
    so per-tensor int8 weights give the rest their own scale. Returns how many MatMuls were split.

    A trained BERT writes a handful of residual-stream dimensions tens of times larger than the others
    (the SQuAD teacher's FFN down-projections: the largest column 5-42x the median one); one weight
    scale then leaves the other columns 2-4 bits. The two outputs are concatenated and put back in order
    by a Gather, which static quantization leaves in float (its input still holds the large columns)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    splits = {}
    for index, node in _weight_matmuls(graph):
        w = numpy_helper.to_array(weights[node.input[1]])
        if w.ndim != 2:
            continue
        columns = np.abs(w).max(axis=0)
        large = columns > ratio * np.median(columns)
        if large.any() and not large.all():
            splits[index] = (w, large)
    nodes = []
    for index, node in enumerate(graph.node):
        if index not in splits:
            nodes.append(node)
            continue
        w, large = splits[index]
        key = node.name or node.output[0]
        order = np.concatenate([np.flatnonzero(~large), np.flatnonzero(large)])
        rest, big, y = f"{key}/rest", f"{key}/large", node.output[0]
        graph.initializer.extend([numpy_helper.from_array(w[:, ~large], f"{rest}/weight"),
                                  numpy_helper.from_array(w[:, large], f"{big}/weight"),
                                  numpy_helper.from_array(np.argsort(order).astype(np.int64), f"{key}/order")])
        nodes += [helper.make_node("MatMul", [node.input[0], f"{rest}/weight"], [rest], name=rest),
                  helper.make_node("MatMul", [node.input[0], f"{big}/weight"], [big], name=big),
                  helper.make_node("Concat", [rest, big], [f"{key}/joined"], name=f"{key}/concat", axis=-1),
                  helper.make_node("Gather", [f"{key}/joined", f"{key}/order"], [y], name=f"{_REORDER}/{key}",
                                   axis=-1)]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return len(splits)


def _float_gathers(model: Path) -> list[str]:
    """The column-reordering Gathers of isolate_outlier_columns: not to be quantized."""
    import onnx

    return [n.name for n in onnx.load(str(model), load_external_data=False).graph.node
            if n.op_type == "Gather" and n.name.startswith(_REORDER)]


def isolate_first_token(src: Path, dst: Path) -> int:
    """Run every weight MatMul over the token sequence twice: on the first token ([CLS]) and on the rest,
    so that dynamic quantization gives each its own activation scale, and static calibration its own
    range. Returns how many were split.

    In a trained BERT the [CLS] row's activations are several times larger than any other token's
    (the SQuAD teacher: 6-9x at the FFN's down-projection in layers 0-3), so one scale per tensor
    leaves the other tokens a few bits. A classifier reads [CLS] alone; a span model scores every
    token. On 384-token SQuAD windows, with per-channel weights, it took ORT's dynamic int8 from
    1.7 F1 below torch to 0.8 (start/end agreement 0.86 -> 0.91), for two Slices a tensor and a
    Concat per MatMul. MatMuls of one input (query, key, value) share its slices, so each slice is
    quantized once.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    one_token = {v.name for v in (*graph.value_info, *graph.input)  # a classifier's last layer: nothing to split
                 if len(v.type.tensor_type.shape.dim) == 3 and v.type.tensor_type.shape.dim[1].dim_value == 1}
    split = {index: node for index, node in _weight_matmuls(graph) if node.input[0] not in one_token}
    first, second, end = "isolate/zero", "isolate/one", "isolate/end"
    nodes, sliced = [], set()
    for index, node in enumerate(graph.node):
        if index not in split:
            nodes.append(node)
            continue
        x, w, y, name = node.input[0], node.input[1], node.output[0], node.name or f"matmul{index}"
        cls, tokens = f"{x}/cls", f"{x}/tokens"
        if x not in sliced:
            sliced.add(x)
            nodes += [helper.make_node("Slice", [x, first, second, second], [cls], name=f"{x}/slice_cls"),
                      helper.make_node("Slice", [x, second, end, second], [tokens], name=f"{x}/slice_tokens")]
        nodes += [helper.make_node("MatMul", [cls, w], [f"{name}/cls_out"], name=f"{name}/cls"),
                  helper.make_node("MatMul", [tokens, w], [f"{name}/tokens_out"], name=f"{name}/tokens"),
                  helper.make_node("Concat", [f"{name}/cls_out", f"{name}/tokens_out"], [y], name=f"{name}/concat",
                                   axis=1)]
    graph.initializer.extend([numpy_helper.from_array(np.array([value], np.int64), key) for key, value in
                              ((first, 0), (second, 1), (end, np.iinfo(np.int64).max))])
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return len(split)


def _calibrate(model: Path, calibration: dict[str, np.ndarray], method: Any, work: Path, ranges: Path) -> None:
    """Activation ranges for quantize_static, written as its calibration cache.

    Done here rather than inside quantize_static because that cannot set the
    histogram size: its Entropy default (128 bins, 128 quantized bins) leaves a
    single candidate threshold, so Entropy silently equals MinMax. 512 bins give
    192 candidates; TensorRT's 2048 made ORT's pure-Python search 10x slower
    (70 s for the 4-layer model, 64 samples).
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    options: dict[str, Any] = {"symmetric": False}
    if method == CalibrationMethod.Entropy:
        options |= {"num_bins": 512, "num_quantized_bins": 128}
    calibrator = create_calibrator(model, _STATIC_OPS, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=method, extra_options=options)
    import onnx

    names = [value.name for value in onnx.load(str(model), load_external_data=False).graph.input]
    calibrator.collect_data(_Calibration(calibration, names))
    data = calibrator.compute_data()
    save_tensors_data(limit_entropy_clipping(data) if method == CalibrationMethod.Entropy else data, ranges)


#: entropy calibration may narrow a tensor's observed range at most this many times (one bit of int8). On
#: the SQuAD teacher (400 dev questions, torch 72.87 F1): unlimited 58.72 F1, limit 3x 69.17, 2x 73.05, 1.5x 72.29
ENTROPY_MAX_NARROWING = 2.0


def limit_entropy_clipping(data: Any, limit: float = ENTROPY_MAX_NARROWING) -> Any:
    """Entropy's ranges (TensorsData, changed in place), except for tensors it narrowed more than `limit` times:
    those keep their observed range.

    Entropy (KL) thresholds clip the tails that hold little of a tensor's mass, and ORT's search always
    clips to between a quarter and all of the range. In a transformer those tails carry the model:
    attention probabilities are mostly near 0, and the few large ones are where a token looks (the SQuAD
    teacher's were clipped at 0.25); a trained BERT's outlier features are a few dimensions of every
    token. Clipped, ORT's entropy int8 lost 14 F1 on SQuAD where minmax lost 0.2."""
    from onnxruntime.quantization.calibrate import TensorData

    for name, tensor in data.items():
        filled = np.flatnonzero(tensor.hist)
        low, high = tensor.bins[filled[0]], tensor.bins[filled[-1] + 1]  # the observed range, to a bin
        if max(abs(low), abs(high)) > limit * max(abs(tensor.lowest), abs(tensor.highest)):
            data[name] = TensorData(lowest=np.float32(low), highest=np.float32(high), hist=tensor.hist, bins=tensor.bins)
    return data

