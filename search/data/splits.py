"""What every task's data splits have in common, for the signatures that take any of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

    from transformers import PreTrainedTokenizerBase as Tokenizer  # noqa: F401  (re-exported for annotations)


class TaskSplits(Protocol):
    """A task's train/dev/test data: `Splits` (classification) and `QASplits` (extractive QA) both are one."""

    name: str
    task: str  # what a model of this data does: "classification" or "qa"

    @property
    def num_labels(self) -> int: ...

    @property
    def label_names(self) -> Sequence[str]: ...

    def content_hash(self) -> str: ...

    def scored_set(self, split: str, tokenizer: Tokenizer, seq_len: int,
                   rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The arrays runtime/ scores a split ("train", "dev", "test") on: what score_logits reads."""
        ...
