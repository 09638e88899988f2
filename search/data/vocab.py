"""Vocabulary trimming: keep only the WordPiece tokens a task's training text uses (plus the
special tokens). The embedding table, the largest part of every small model's file,
shrinks to those rows; the tokenizer keeps its full vocabulary for splitting words,
so text made only of kept tokens is split and scored exactly as before, and every
other piece becomes [UNK]."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgenas.errors import EdgenasError

if TYPE_CHECKING:
    from edgenas.search.data.splits import Tokenizer


@dataclass(frozen=True)
class VocabTrim:
    """The kept token ids of the full vocabulary, in their original order."""

    kept: np.ndarray  # sorted full-vocabulary ids
    full_size: int
    unk_id: int

    @classmethod
    def from_texts(cls, tokenizer: Tokenizer, texts: list[str]) -> "VocabTrim":
        """The tokens `texts` use, plus every special token of the tokenizer."""
        used = set(tokenizer.all_special_ids)
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            used.update(ids)
        if tokenizer.unk_token_id is None:
            raise EdgenasError("vocabulary trimming needs a tokenizer with an [UNK] token")
        return cls(np.array(sorted(used), dtype=np.int64), len(tokenizer), int(tokenizer.unk_token_id))

    @property
    def size(self) -> int:
        return len(self.kept)

    def mapping(self) -> np.ndarray:
        """Full id -> trimmed id; dropped tokens map to the trimmed [UNK]."""
        table = np.full(self.full_size, np.searchsorted(self.kept, self.unk_id), dtype=np.int64)
        table[self.kept] = np.arange(len(self.kept))
        return table

    def remap(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tokenized arrays with input_ids in the trimmed vocabulary (other arrays unchanged)."""
        return {**encoded, "input_ids": self.mapping()[encoded["input_ids"]]}

    def trim_model(self, model) -> None:
        """Keep only the kept rows of a transformers model's word embeddings (in place)."""
        import torch

        embeddings = model.get_input_embeddings()
        rows = torch.from_numpy(self.kept)
        trimmed = torch.nn.Embedding(len(rows), embeddings.weight.shape[1], padding_idx=embeddings.padding_idx)
        with torch.no_grad():
            trimmed.weight.copy_(embeddings.weight[rows])
        model.set_input_embeddings(trimmed)
        model.config.vocab_size = len(rows)

    def save_tokenizer(self, tokenizer: Tokenizer, directory: Path) -> None:
        """Write tokenizer.json (+ tokenizer_config.json) whose ids are the trimmed ones.

        Written as JSON here: the tokenizers library re-serialises a vocabulary by id,
        which would drop the many pieces that share [UNK]'s id."""
        table = self.mapping()
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        spec["model"]["vocab"] = {token: int(table[i]) for token, i in spec["model"]["vocab"].items()}
        for added in spec.get("added_tokens", []):
            added["id"] = int(table[added["id"]])
        for special in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
            special["ids"] = [int(table[i]) for i in special["ids"]]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tokenizer.model_max_length,
                  "edgenas_vocabulary": {"kept": self.size, "of": self.full_size}}
        config |= {name: str(getattr(tokenizer, name)) for name in
                   ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token") if getattr(tokenizer, name, None)}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
