"""Runners: one class per backend that loads its artifact and runs it on tokenized inputs.

Self-contained on purpose: imports only numpy here and the runtime library
(onnxruntime, ai_edge_litert or executorch) when an artifact is loaded, never
anything from edgenas, so targets can copy this file to a device and run it
there. Which runner serves which artifact is declared in backends.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Canonical input names of the artifact I/O convention, in positional order.
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
#: the sequence length an artifact is compiled for, and timed at, when nothing else says
DEFAULT_SEQ_LEN = 128


class RuntimeLoadError(Exception):
    """The artifact cannot be loaded: unknown format, rejected by the runtime, ..."""


class RuntimeMissingError(RuntimeLoadError):
    """The runtime library the artifact needs is not installed on this device."""


def _canonical_key(name: str, position: int, count: int) -> str:
    """Map a model input name (maybe prefixed, e.g. 'serving_default_input_ids:0') to a convention key."""
    for key in INPUT_KEYS:
        if key in name:
            return key
    if count <= len(INPUT_KEYS):
        # Unnamed inputs (e.g. 'args_0') follow the convention's positional order.
        return INPUT_KEYS[position]
    raise RuntimeLoadError(f"model input {name!r} matches none of {', '.join(INPUT_KEYS)}")


def fit_seq_len(arrays: dict[str, np.ndarray], seq_len: int | None) -> dict[str, np.ndarray]:
    """Pad with zeros (masked out) or truncate every (N, S) array to seq_len; no-op if seq_len is None."""
    if seq_len is None:
        return arrays
    out = {}
    for key, arr in arrays.items():
        if arr.ndim != 2 or arr.shape[1] == seq_len:
            out[key] = arr
        elif arr.shape[1] > seq_len:
            out[key] = arr[:, :seq_len]
        else:
            out[key] = np.pad(arr, ((0, 0), (0, seq_len - arr.shape[1])))
    return out


class Runner:
    """One loaded artifact: feeds are keyed by the convention names, output is float32 logits."""

    runtime: str = ""
    input_names: list[str]
    seq_len: int | None = None
    _keys: list[str]  # convention key of each model input, in the model's input order

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return float32 logits."""
        raise NotImplementedError

    def predict_logits(self, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Run a whole tokenized dataset in batches and return float32 logits (N, num_labels)."""
        arrays = fit_seq_len({k: np.asarray(v) for k, v in arrays.items()}, self.seq_len)
        n = len(arrays["input_ids"])
        outputs = []
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
            size = len(batch["input_ids"])
            if size < batch_size and n > batch_size:
                # Pad the last batch so fixed-shape runtimes are not re-planned for one batch.
                batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - size, axis=0)]) for k, v in batch.items()}
            outputs.append(self.run(batch)[:size])
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def _rows_at_a_time(self, selected: dict[str, np.ndarray], fixed_batch: int) -> np.ndarray:
        """Run a batch through a model whose batch size is fixed, one slice of fixed_batch rows at a time."""
        batch = len(selected[self._keys[0]])
        return np.concatenate([self.run({k: v[i:i + fixed_batch] for k, v in selected.items()})
                               for i in range(0, batch, fixed_batch)])

    def _select(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Keep the feeds this model declares; a missing declared input is an error."""
        missing = [k for k in self._keys if k not in feeds]
        if missing:
            raise ValueError(f"feeds lack {', '.join(missing)} (the {self.runtime} model needs {', '.join(self._keys)})")
        return {k: feeds[k] for k in self._keys}


class OnnxRunner(Runner):
    """ONNX Runtime InferenceSession on the CPU execution provider."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1, graph_optimization: str = "all") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeMissingError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        opts.log_severity_level = 3  # keep ORT warnings off the measurement's stdout/stderr
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise RuntimeLoadError(f"onnxruntime rejected {path.name}: {_first_line(exc)}") from exc
        inputs = self._session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self._keys = [_canonical_key(i.name, pos, len(inputs)) for pos, i in enumerate(inputs)]
        self._dtypes = [_onnx_dtype(i.type) for i in inputs]
        seq = inputs[0].shape[1] if len(inputs[0].shape) > 1 else None
        self.seq_len = seq if isinstance(seq, int) and seq > 0 else None
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        self._output = "logits" if "logits" in names else names[0]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return float32 logits."""
        selected = self._select(feeds)
        ort_feeds = {name: np.ascontiguousarray(selected[key], dtype=dtype)
                     for name, key, dtype in zip(self.input_names, self._keys, self._dtypes)}
        (logits,) = self._session.run([self._output], ort_feeds)
        return np.asarray(logits, dtype=np.float32)


def _onnx_dtype(type_str: str) -> np.dtype:
    """numpy dtype of an ORT type string such as 'tensor(int64)'."""
    name = type_str.removeprefix("tensor(").removesuffix(")")
    return np.dtype({"float": "float32", "double": "float64", "float16": "float16"}.get(name, name))


class TfliteRunner(Runner):
    """LiteRT (ai_edge_litert) interpreter, XNNPACK on or off."""

    runtime = "tflite"

    def __init__(self, path: Path, threads: int = 1, xnnpack: bool = True) -> None:
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError as exc:
            raise RuntimeMissingError(f"ai-edge-litert is not installed ({exc}); pip install ai-edge-litert") from exc
        # AUTO applies the default delegates (XNNPACK); this resolver skips them.
        resolver = (litert.OpResolverType.AUTO if xnnpack
                    else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            self._interp = litert.Interpreter(model_path=str(path), num_threads=threads,
                                              experimental_op_resolver_type=resolver)
            self._interp.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError
            raise RuntimeLoadError(f"the LiteRT interpreter rejected {path.name}: {_first_line(exc)}") from exc
        inputs = self._interp.get_input_details()
        self.input_names = [d["name"] for d in inputs]
        self._keys = [_canonical_key(d["name"], pos, len(inputs)) for pos, d in enumerate(inputs)]
        self._inputs = inputs
        sig = [int(s) for s in inputs[0]["shape_signature"]]
        self.seq_len = sig[1] if len(sig) > 1 and sig[1] > 0 else None
        self._dynamic_batch = sig[0] < 0
        outputs = self._interp.get_output_details()
        self._output = next((d for d in outputs if "logits" in d["name"]), outputs[0])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return float32 logits (dequantized if the output is integer)."""
        selected = self._select(feeds)
        batch = len(selected[self._keys[0]])
        fixed_batch = int(self._inputs[0]["shape"][0])
        if batch != fixed_batch and not self._dynamic_batch:
            return self._rows_at_a_time(selected, fixed_batch)
        self._reshape(selected)
        for detail, key in zip(self._inputs, self._keys):
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(selected[key], dtype=detail["dtype"]))
        self._interp.invoke()
        out = self._interp.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if np.issubdtype(out.dtype, np.integer) and scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return np.asarray(out, dtype=np.float32)

    def _reshape(self, selected: dict[str, np.ndarray]) -> None:
        """Resize inputs and re-plan when the batch (or dynamic sequence) shape changes."""
        changed = False
        for detail, key in zip(self._inputs, self._keys):
            shape = list(selected[key].shape)
            if list(detail["shape"]) != shape:
                self._interp.resize_tensor_input(detail["index"], shape, strict=True)
                changed = True
        if changed:
            self._interp.allocate_tensors()
            self._inputs = self._interp.get_input_details()
            self._output = next(d for d in self._interp.get_output_details() if d["index"] == self._output["index"])


class ExecutorchRunner(Runner):
    """An ExecuTorch program (XNNPACK delegate) through ExecuTorch's Python runtime; fixed shapes."""

    runtime = "executorch"

    def __init__(self, path: Path, threads: int = 1) -> None:
        try:
            import torch  # ExecuTorch's Python runtime takes and returns torch tensors
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as exc:
            raise RuntimeMissingError(f"executorch is not installed ({exc}); pip install executorch") from exc
        self._torch = torch
        try:
            with _native_stderr_silenced():  # its C++ logs (thread pool, cpuinfo) would reach the user's terminal
                # XNNPACK's thread pool is process-wide: size it to the measured thread count
                portable_lib._unsafe_reset_threadpool(threads)
                self._method = Runtime.get().load_program(str(path)).load_method("forward")
        except Exception as exc:  # the runtime raises RuntimeError/ValueError with its own codes
            raise RuntimeLoadError(f"ExecuTorch rejected {path.name}: {_first_line(exc)}") from exc
        meta = self._method.metadata
        self.input_names = list(INPUT_KEYS[:meta.num_inputs()])
        self._keys = list(self.input_names)
        self._batch, self.seq_len = (int(n) for n in meta.input_tensor_meta(0).sizes())

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return float32 logits."""
        selected = self._select(feeds)
        if len(selected[self._keys[0]]) != self._batch:
            return self._rows_at_a_time(selected, self._batch)
        inputs = [self._torch.from_numpy(np.ascontiguousarray(selected[key], dtype=np.int64)) for key in self._keys]
        (logits,) = self._method.execute(inputs)
        return logits.numpy().astype(np.float32, copy=False)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a while (C++ logging bypasses Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message (runtimes add long dumps)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
