"""A saved MobileBERT (classifier or extractive-QA model) as one module of
(input_ids, attention_mask, token_type_ids) -> logits, the I/O every artifact keeps.

Classifiers give (batch, num_labels). A QA model gives (batch, 2, seq): the start
logits, then the end logits, of every token, as one tensor, so every backend,
quantizer and parity check handles the two tasks alike.

A classifier's last layer is computed for the first token alone: the pooler reads
nothing else, and every token's keys and values are still attended to. The logits
are transformers' own; the last layer's attention output and FFN run on one row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.runtime.runners import INPUT_KEYS
from edgenas.runtime.tasks import task_of_model


def load_model(model_dir: Path, additive_mask: bool = False, **kwargs: Any) -> Any:
    """The saved model as a torch module of the three inputs -> logits, in eval mode.

    additive_mask: a QA model's 4-D additive mask built here rather than in transformers
    (whose index ops break the PT2E quantizer's observers); a classifier always builds its own."""
    import torch
    import transformers

    task = task_of_model(model_dir)
    inner = getattr(transformers, task.architecture).from_pretrained(str(model_dir), **kwargs).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            if not task.spans:
                return classifier_logits(self.model, input_ids, _additive(attention_mask), token_type_ids)
            mask = _additive(attention_mask) if additive_mask else attention_mask
            out = self.model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids)
            return torch.stack([out.start_logits, out.end_logits], dim=1)

    return Logits().eval()


def _additive(attention_mask: Any) -> Any:
    """The (batch, 1, 1, keys) float mask added to attention scores: 0 for a real key, dtype-min for padding."""
    import torch

    return (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def classifier_logits(model: Any, input_ids: Any, mask: Any, token_type_ids: Any) -> Any:
    """A transformers MobileBertForSequenceClassification's logits (eval), its last layer computed for the
    first token alone; mask: the additive attention mask."""
    body = model.mobilebert
    hidden = body.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    *layers, last = body.encoder.layer
    for layer in layers:
        hidden = layer(hidden, mask)
    return model.classifier(body.pooler(_first_token_layer(last, hidden, mask)))


def _first_token_layer(layer: Any, hidden: Any, mask: Any) -> Any:
    """A MobileBertLayer's output for the first token: its query row, and every step after attention, on
    that row alone (the same modules and arithmetic as the layer's own forward)."""
    first = hidden[:, :1]
    if not layer.use_bottleneck:
        key, value, layer_input = hidden, hidden, first
    elif layer.bottleneck.use_bottleneck_attention:
        key = value = layer.bottleneck.input(hidden)
        layer_input = key[:, :1]
    elif layer.bottleneck.key_query_shared_bottleneck:
        key, value, layer_input = layer.bottleneck.attention(hidden), hidden, layer.bottleneck.input(first)
    else:
        key, value, layer_input = hidden, hidden, layer.bottleneck.input(first)
    attention = layer.attention.self

    def heads(x: Any) -> Any:  # (batch, tokens, heads x size) -> (batch, heads, tokens, size)
        return x.unflatten(-1, (attention.num_attention_heads, -1)).transpose(1, 2)

    # the query reads what the key reads; sliced after its projection, not before: a slice of the input
    # shared with the key and value makes ExecuTorch's XNNPACK partitioner find a dependency cycle
    query = attention.query(key)[:, :1]
    scores = heads(query) @ heads(attention.key(key)).transpose(2, 3) * attention.scaling + mask
    context = (scores.softmax(dim=-1) @ heads(attention.value(value))).transpose(1, 2).flatten(2)
    x = layer.attention.output(context, layer_input)
    for ffn in getattr(layer, "ffn", ()):  # present only with several FFNs
        x = ffn(x)
    return layer.output(layer.intermediate(x), x, first)


def reference_logits(model_dir: Path, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """fp32 logits of the saved model itself at the arrays' full width: what every artifact is checked against."""
    import torch

    model = load_model(model_dir)
    outs = []
    with torch.no_grad():
        for i in range(0, len(arrays["input_ids"]), batch_size):
            feeds = {n: torch.from_numpy(arrays[n][i:i + batch_size].astype(np.int64)) for n in INPUT_KEYS}
            outs.append(model(**feeds).numpy())
    return np.concatenate(outs)
