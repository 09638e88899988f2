"""The TF twin of a MobileBERT -> .tflite FlatBuffer through tf.lite.TFLiteConverter.

Runs inside the compile child process (see edgenas.compile.api).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgenas.compile.errors import CompileError
from edgenas.compile.tf_mobilebert import build_tf_model
from edgenas.runtime.backends import QuantMode
from edgenas.runtime.runners import INPUT_KEYS as INPUT_NAMES


def convert(model_dir: Path, out: Path, mode: QuantMode, seq_len: int, calibration: dict[str, np.ndarray] | None,
            work: Path, exporter: str = "default") -> None:
    """Write the .tflite for one mode: fp32, dynamic_int8, fp16 or full_int8 (int32 ids). A float interface
    takes any sequence length up to the model's (a text is read at its own length, not padded to seq_len;
    as fast as a fixed seq_len at that length); full int8 keeps the calibrated seq_len."""
    import tensorflow as tf

    full_int8 = mode.needs_calibration  # the converter calibrates activations itself
    model = build_tf_model(model_dir, int8_mask=full_int8)
    fn = model.concrete_function(seq_len if full_int8 else None, tf.int32)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if mode.weights == "int8" and not full_int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode.weights == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif full_int8:
        if calibration is None:
            raise CompileError(f"mode {mode.name} needs calibration data (an .npz of training samples)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # ids stay int32 (they index tables); the logits come out int8 and the
        # runtime dequantizes them with the output tensor's (scale, zero point).
        converter.inference_output_type = tf.int8
    elif mode.weights != "fp32":
        raise CompileError(f"tflite has no mode with {mode.weights} weights")
    out.write_bytes(converter.convert())
    _name_io(out)


def _name_io(path: Path) -> None:
    """Rename I/O tensors to the convention (input_ids, ..., logits); the converter names them
    'serving_default_input_ids:0' and 'StatefulPartitionedCall:0'. Signatures index tensors, so they hold."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    for index in graph.inputs:
        name = graph.tensors[index].name.decode()
        graph.tensors[index].name = name.removeprefix("serving_default_").removesuffix(":0").encode()
    (output,) = graph.outputs
    graph.tensors[output].name = b"logits"
    flatbuffer_utils.write_model(model, str(path))


def _representative(arrays: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """One training row at a time, keyed by the serving signature's input names."""
    for i in range(len(arrays["input_ids"])):
        yield {n: arrays[n][i:i + 1].astype(np.int32) for n in INPUT_NAMES}


def describe(artifact: Path) -> dict[str, Any]:
    """Inputs and outputs (with their quantization) as the interpreter reads them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(artifact))

    def details(ds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": d["name"], "shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                 "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]} for d in ds]

    inputs = details(interp.get_input_details())
    return {"inputs": inputs, "outputs": details(interp.get_output_details()), "opset": None,
            "dynamic_batch": inputs[0]["shape"][0] < 0}
