"""A saved MobileBERT (classifier or extractive-QA model) as one module of
(input_ids, attention_mask, token_type_ids) -> logits, the I/O every artifact keeps.

Classifiers give (batch, num_labels). A QA model gives (batch, 2, seq): the start
logits, then the end logits, of every token, as one tensor, so every backend,
quantizer and parity check handles the two tasks alike.
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

    additive_mask: build the 4-D additive mask here rather than in transformers
    (whose index ops break the PT2E quantizer's observers)."""
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
            mask = attention_mask
            if additive_mask:
                mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            out = self.model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids)
            return torch.stack([out.start_logits, out.end_logits], dim=1) if task.spans else out.logits

    return Logits().eval()


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
