"""A MobileBERT -> ExecuTorch .pte program lowered to the XNNPACK delegate (fp32 or int8 through PT2E).

Runs inside the compile child process (see edgenas.compile.api). The program has
fixed shapes, batch 1 and the compiled sequence length, like the full-int8 TFLite artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgenas.compile.errors import CompileError
from edgenas.compile.torch_model import load_model
from edgenas.runtime.backends import QuantMode
from edgenas.runtime.runners import INPUT_KEYS as INPUT_NAMES


def _example(seq_len: int) -> tuple[Any, ...]:
    """Batch-1 inputs of the compiled shape (id 0 exists in every vocabulary)."""
    import torch

    ids = torch.zeros((1, seq_len), dtype=torch.long)
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def _quantized(module: Any, example: tuple[Any, ...], mode: QuantMode,
               calibration: dict[str, np.ndarray] | None) -> Any:
    """PT2E int8 of the Linear layers: dynamic (ranges per run) or static (ranges from calibration rows)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = not mode.needs_calibration
    if not dynamic and calibration is None:
        raise CompileError(f"mode {mode.name} needs calibration data (an .npz of training samples)")
    config = get_symmetric_quantization_config(is_per_channel=mode.per_channel, is_dynamic=dynamic)
    # Linear layers only: the embedding lookups take integer ids
    quantizer = XNNPACKQuantizer().set_module_type(torch.nn.Linear, config)
    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    rows = [] if dynamic else range(len(calibration["input_ids"]))
    with torch.no_grad():
        prepared(*example)
        for i in rows:
            prepared(*(torch.from_numpy(calibration[n][i:i + 1].astype(np.int64)) for n in INPUT_NAMES))
    return convert_pt2e(prepared)


def convert(model_dir: Path, out: Path, mode: QuantMode, seq_len: int, calibration: dict[str, np.ndarray] | None,
            work: Path, exporter: str = "default") -> None:
    """Write the .pte for one mode: fp32, dynamic_int8 or static_int8."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module, example = load_model(model_dir, additive_mask=True), _example(seq_len)
    if mode.weights == "int8":
        module = _quantized(module, example, mode, calibration)
    elif mode.weights != "fp32":
        raise CompileError(f"executorch has no {mode.weights} mode")
    with torch.no_grad():
        program = torch.export.export(module, example)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    out.write_bytes(lowered.buffer)


#: ExecuTorch ScalarType codes -> numpy dtype names (the ones these programs use)
SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32"}


def describe(artifact: Path) -> dict[str, Any]:
    """Inputs and outputs as the program's forward method declares them."""
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(str(artifact)).metadata("forward")

    def io(count: int, info: Any, names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{"name": name, "shape": list(info(i).sizes()), "dtype": SCALAR_TYPES.get(info(i).dtype(), "other")}
                for i, name in zip(range(count), names)]

    return {"inputs": io(meta.num_inputs(), meta.input_tensor_meta, INPUT_NAMES),
            "outputs": io(meta.num_outputs(), meta.output_tensor_meta, ("logits",)), "opset": None,
            "dynamic_batch": False}
