"""A compact plain-TensorFlow MobileBERT for sequence classification, built from torch weights.

transformers 5 ships no TensorFlow models, so this mirrors
``transformers.models.mobilebert.modeling_mobilebert`` (NoNorm, trigram input
embedding, bottlenecks, shared key/query bottleneck, stacked FFNs) op for op,
reading the ``save_pretrained`` directory directly (config.json + model.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from edgenas.compile.errors import CompileError
from edgenas.runtime.runners import INPUT_KEYS as INPUT_NAMES


# Added to the scores of padded keys (torch adds dtype-min; either makes exp() exactly 0 in fp32).
_MASK_VALUE = -10000.0
#: int8 twin: padded keys score this far below the row's lowest score, so each weighs at most
#: exp(-MARGIN) ~ 6e-6 of any real key, well under the int8 softmax output's step of 1/256
_INT8_MASK_MARGIN = 12.0


def load_hf_dir(model_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read config.json and model.safetensors of a transformers save_pretrained dir."""
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise CompileError(f"{model_dir} is not a save_pretrained dir (needs config.json and model.safetensors)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "mobilebert":
        raise CompileError(f"{model_dir}: model_type is {config.get('model_type')!r}, expected 'mobilebert'")
    weights = {k: v.astype(np.float32) if v.dtype != np.float32 and v.dtype.kind == "f" else v
               for k, v in load_file(str(weights_path)).items()}
    return config, weights


#: a token sequence held in consecutive parts along the sequence axis: [all tokens], or, in the full-int8
#: twin, [the first token, the others], each part computed (and int8-quantized) apart
Parts = list[tf.Tensor]


def _joined(tensors: Parts, axis: int) -> tf.Tensor:
    """The tensors concatenated along axis (one tensor as it is: no Concat op in the graph)."""
    return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=axis)


def _first_token(tensors: Parts) -> Parts:
    """The first token of a sequence held in parts, as parts."""
    return [tensors[0][:, :1]]


def _erf_gelu(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


def _activation(name: str, for_onnx: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
    """for_onnx: exact GELU written with Erf, because tf.nn.gelu lowers to Erfc, which tf2onnx
    cannot convert; TFLite keeps tf.nn.gelu, which its converter fuses into one GELU op."""
    acts: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
        "relu": tf.nn.relu,
        "gelu": _erf_gelu if for_onnx else lambda x: tf.nn.gelu(x, approximate=False),
        "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
        "tanh": tf.math.tanh,
    }
    if name not in acts:
        raise CompileError(f"hidden_act {name!r} is not supported by the TF MobileBERT")
    return acts[name]


class TFMobileBert(tf.Module):
    """MobileBertForSequenceClassification (or ...ForQuestionAnswering) in plain TF; weights are
    tf.Variables named like torch."""

    def __init__(self, config: dict[str, Any], weights: dict[str, np.ndarray], int8_mask: bool = False,
                 for_onnx: bool = False, first_token_apart: bool | None = None) -> None:
        """int8_mask: the twin a full-int8 converter calibrates, which differs from the float one only
        within rounding:
        - padded keys score just below the row's minimum instead of -1e4 added (the same to within
          exp(-12)), so the softmax input keeps the scores' own range (with -1e4 in it its int8 step
          is ~39 and attention goes flat);
        - the first token ([CLS]) runs apart from the others wherever a token is computed alone, so
          each tensor of it has its own int8 scale. A trained BERT's [CLS] carries a residual-stream
          dimension far beyond any other token's (the SQuAD teacher: 219 against a median dimension's
          2.2 before the FFN's LayerNorm), and one scale for all tokens left the others 1-2 levels
          (the teacher's 72.9 F1 fell to 26.6; apart, 57.7). Attention joins the two: its scores are
          concatenated over the keys, where the [CLS] key's still set the scale (benchmarks/RESULTS.md 8b).
        first_token_apart: that second point alone (default: with int8_mask)."""
        super().__init__(name="mobilebert")
        self.int8_mask = int8_mask
        self.first_token_apart = int8_mask if first_token_apart is None else first_token_apart
        self.c = dict(config)
        self.qa = "MobileBertForQuestionAnswering" in (self.c.get("architectures") or [])
        bottleneck = self.c.get("use_bottleneck", True)
        self.true_hidden = self.c.get("intra_bottleneck_size", 128) if bottleneck else self.c["hidden_size"]
        self.heads = int(self.c["num_attention_heads"])
        self.head_size = self.true_hidden // self.heads
        self.act = _activation(self.c.get("hidden_act", "relu"), for_onnx)
        # tf.Module tracks the dict's variables, so the converters can freeze them.
        self.w = {k.replace(".", "/"): tf.Variable(v, trainable=False, name=k.replace(".", "/"))
                  for k, v in weights.items() if not k.startswith("cls.")}

    # -- building blocks, each the twin of a torch module ---------------------
    def _p(self, name: str) -> tf.Variable:
        return self.w[name.replace(".", "/")]

    def _linear(self, x: tf.Tensor, name: str) -> tf.Tensor:
        return tf.matmul(x, self._p(f"{name}.weight"), transpose_b=True) + self._p(f"{name}.bias")

    def _norm(self, x: tf.Tensor, name: str, eps: float) -> tf.Tensor:
        w, b = self._p(f"{name}.weight"), self._p(f"{name}.bias")
        if self.c.get("normalization_type", "no_norm") == "no_norm":
            return x * w + b
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * w + b

    def _embeddings(self, ids: tf.Tensor, token_types: tf.Tensor) -> tf.Tensor:
        p = "mobilebert.embeddings"
        x = tf.gather(self._p(f"{p}.word_embeddings.weight"), ids)
        if self.c.get("trigram_input", True):
            nxt = tf.pad(x[:, 1:], [[0, 0], [0, 1], [0, 0]])
            prev = tf.pad(x[:, :-1], [[0, 0], [1, 0], [0, 0]])
            x = tf.concat([nxt, x, prev], axis=2)
        if self.c.get("trigram_input", True) or self.c["embedding_size"] != self.c["hidden_size"]:
            x = self._linear(x, f"{p}.embedding_transformation")
        seq = tf.shape(ids)[1]
        pos = self._p(f"{p}.position_embeddings.weight")[:seq]
        x = x + pos[tf.newaxis] + tf.gather(self._p(f"{p}.token_type_embeddings.weight"), token_types)
        return self._norm(x, f"{p}.LayerNorm", 1e-5)  # torch builds this norm without eps

    def _attention(self, q: Parts, k: Parts, v: Parts, mask: tf.Tensor, p: str) -> Parts:
        """Self-attention over tokens held in parts: each part's queries score every part's keys."""
        batch = tf.shape(q[0])[0]

        def split(x: tf.Tensor) -> tf.Tensor:
            # the sequence length comes from x itself, never from a transposed tensor: with one head
            # tf2onnx folds the transposes into reshapes and re-targets Shape(ctx) to the wrong axes
            return tf.transpose(tf.reshape(x, [batch, tf.shape(x)[1], self.heads, self.head_size]), [0, 2, 1, 3])

        def merge(ctx: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
            return tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [batch, tf.shape(like)[1], self.heads * self.head_size])

        keys = [split(self._linear(x, f"{p}.key")) for x in k]
        values = [split(self._linear(x, f"{p}.value")) for x in v]
        out = []
        for x in q:
            query = split(self._linear(x, f"{p}.query"))
            scores = _joined([tf.matmul(query, key, transpose_b=True) for key in keys], axis=-1)
            scores = scores * (self.head_size**-0.5)
            if self.int8_mask:
                # padded keys score MARGIN below the row's lowest score: every tensor keeps the scores'
                # own range (+MARGIN), and no division by a quantized sum (which can round to zero)
                floor = tf.reduce_min(scores, axis=-1, keepdims=True) - _INT8_MASK_MARGIN
                scores = floor + (scores - floor) * mask
            else:
                scores = scores + mask
            probs = tf.nn.softmax(scores, axis=-1)
            if len(values) == 1:
                ctx = tf.matmul(probs, values[0])
            else:  # the first key's weight times its value, plus the other keys'
                ctx = probs[..., :1] * values[0] + tf.matmul(probs[..., 1:], values[1])
            out.append(merge(ctx, x))
        return out

    def _layer(self, h: Parts, mask: tf.Tensor, i: int, first_token_only: bool = False) -> Parts:
        """Layer i of the encoder; first_token_only: its output for the first token alone, which still
        attends to every token (a classifier's last layer: the pooler reads nothing else)."""
        p, eps = f"mobilebert.encoder.layer.{i}", float(self.c.get("layer_norm_eps", 1e-12))

        def linear(xs: Parts, name: str) -> Parts:
            return [self._linear(x, name) for x in xs]

        def add_norm(xs: Parts, residual: Parts, name: str, eps: float) -> Parts:
            return [self._norm(x + r, name, eps) for x, r in zip(xs, residual)]

        rows = _first_token if first_token_only else (lambda xs: xs)  # the tokens whose output is kept

        def bottleneck(xs: Parts, name: str) -> Parts:
            return [self._norm(x, f"{p}.bottleneck.{name}.LayerNorm", eps)
                    for x in linear(xs, f"{p}.bottleneck.{name}.dense")]

        if not self.c.get("use_bottleneck", True):
            q, k, v, layer_input = rows(h), h, h, rows(h)
        elif self.c.get("use_bottleneck_attention", False):
            k = v = bottleneck(h, "input")
            q = layer_input = rows(k)
        elif self.c.get("key_query_shared_bottleneck", True):
            k = bottleneck(h, "attention")
            q, v, layer_input = rows(k), h, bottleneck(rows(h), "input")
        else:
            q, k, v, layer_input = rows(h), h, h, bottleneck(rows(h), "input")
        h = rows(h)
        ctx = self._attention(q, k, v, mask, f"{p}.attention.self")
        x = add_norm(linear(ctx, f"{p}.attention.output.dense"), layer_input, f"{p}.attention.output.LayerNorm", eps)
        for j in range(int(self.c.get("num_feedforward_networks", 4)) - 1):
            f = f"{p}.ffn.{j}"
            inner = [self.act(y) for y in linear(x, f"{f}.intermediate.dense")]
            x = add_norm(linear(inner, f"{f}.output.dense"), x, f"{f}.output.LayerNorm", eps)
        inner = [self.act(y) for y in linear(x, f"{p}.intermediate.dense")]
        out = add_norm(linear(inner, f"{p}.output.dense"), x, f"{p}.output.LayerNorm", 1e-5)
        if self.c.get("use_bottleneck", True):
            b = f"{p}.output.bottleneck"
            out = add_norm(linear(out, f"{b}.dense"), h, f"{b}.LayerNorm", eps)
        return out

    def logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor, token_type_ids: tf.Tensor) -> tf.Tensor:
        """Logits for int inputs of shape (batch, seq): a classifier's (batch, num_labels), a QA
        model's (batch, 2, seq), start then end (the I/O of edgenas.compile.torch_model)."""
        ids, types = tf.cast(input_ids, tf.int32), tf.cast(token_type_ids, tf.int32)
        # expand_dims, not [:, newaxis, newaxis, :]: a new-axis StridedSlice of dynamic length needs flex ops
        keys = tf.expand_dims(tf.expand_dims(tf.cast(attention_mask, tf.float32), 1), 1)
        mask = keys if self.int8_mask else (1.0 - keys) * _MASK_VALUE
        h = self._embeddings(ids, types)
        parts = [h[:, :1], h[:, 1:]] if self.first_token_apart else [h]
        layers = int(self.c["num_hidden_layers"])
        for i in range(layers):
            parts = self._layer(parts, mask, i, first_token_only=not self.qa and i == layers - 1)
        if self.qa:
            return tf.transpose(_joined([self._linear(x, "qa_outputs") for x in parts], axis=1), [0, 2, 1])
        pooled = parts[0][:, 0]
        if self.c.get("classifier_activation", True):
            pooled = tf.math.tanh(self._linear(pooled, "mobilebert.pooler.dense"))
        return self._linear(pooled, "classifier")

    def serving_function(self, seq_len: int | None, dtype: tf.DType = tf.int32) -> Any:
        """A tf.function with inputs input_ids/attention_mask/token_type_ids (batch, seq_len) -> {'logits'}."""
        if seq_len is not None and seq_len > int(self.c.get("max_position_embeddings", 512)):
            raise CompileError(f"seq_len {seq_len} exceeds max_position_embeddings {self.c.get('max_position_embeddings')}")
        specs = [tf.TensorSpec([None, seq_len], dtype, name=n) for n in INPUT_NAMES]

        @tf.function(input_signature=specs)
        def serve(input_ids: tf.Tensor, attention_mask: tf.Tensor, token_type_ids: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"logits": self.logits(input_ids, attention_mask, token_type_ids)}

        return serve

    def concrete_function(self, seq_len: int | None, dtype: tf.DType = tf.int32) -> Any:
        """The traced serving_function, as the TFLite converter wants it."""
        return self.serving_function(seq_len, dtype).get_concrete_function()


def build_tf_model(model_dir: Path, int8_mask: bool = False, for_onnx: bool = False,
                   first_token_apart: bool | None = None) -> TFMobileBert:
    """The TF twin of the torch model saved in model_dir."""
    config, weights = load_hf_dir(model_dir)
    return TFMobileBert(config, weights, int8_mask=int8_mask, for_onnx=for_onnx, first_token_apart=first_token_apart)
