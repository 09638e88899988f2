"""Value types shared by search/ and compile/ (runtime/ keeps its own, numpy-only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from edgenas.runtime.runners import DEFAULT_SEQ_LEN

ARCH_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intra_bottleneck_size",
    "num_attention_heads",
    "num_feedforward_networks",
    "intermediate_size",
    "embedding_size",
)


@dataclass(frozen=True)
class Family:
    """The MobileBertConfig switches a space fixes (not searched): MobileBERT's own, or a BERT's.

    MobileBERT: bottlenecks, NoNorm, trigram input, ReLU. A pretrained BERT such as
    MiniLM: no bottleneck, LayerNorm, plain embeddings, GELU; its width then comes in
    whole heads of `head_size`.
    """

    use_bottleneck: bool = True
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    normalization_type: Literal["no_norm", "layer_norm"] = "no_norm"
    trigram_input: bool = True
    hidden_act: Literal["relu", "gelu"] = "relu"
    classifier_activation: bool = True
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Family":
        return cls(**values)


@dataclass(frozen=True, order=True)
class ArchConfig:
    """One MobileBERT architecture: the knobs the search turns."""

    num_hidden_layers: int = 24
    hidden_size: int = 512
    intra_bottleneck_size: int = 128
    num_attention_heads: int = 4
    num_feedforward_networks: int = 4
    intermediate_size: int = 512
    embedding_size: int = 128

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ArchConfig":
        return cls(**{k: int(values[k]) for k in ARCH_KEYS})

    def short(self) -> str:
        """Compact label: L4-H256-B64-A2-F2-I256-E128, or L6-H384-A12-I1536-E384 without a bottleneck."""
        if self.intra_bottleneck_size == self.hidden_size and self.num_feedforward_networks == 1:
            return (f"L{self.num_hidden_layers}-H{self.hidden_size}-A{self.num_attention_heads}"
                    f"-I{self.intermediate_size}-E{self.embedding_size}")
        return (
            f"L{self.num_hidden_layers}-H{self.hidden_size}-B{self.intra_bottleneck_size}"
            f"-A{self.num_attention_heads}-F{self.num_feedforward_networks}"
            f"-I{self.intermediate_size}-E{self.embedding_size}"
        )


#: what each letter of ArchConfig.short() stands for, in its order
ARCH_LETTERS = {"L": "layers", "H": "hidden", "B": "bottleneck", "A": "heads", "F": "FFNs", "I": "FFN dim",
                "E": "embedding"}


def arch_legend(codes: list[str]) -> str:
    """'arch: L layers, H hidden, ...' for the letters the given short() codes use (one line)."""
    used = {part[0] for code in codes for part in code.split("-")}
    return "arch: " + ", ".join(f"{letter} {meaning}" for letter, meaning in ARCH_LETTERS.items() if letter in used)


#: where Candidate kept its knobs before the backend catalog: read from stored trials into `knobs`
_LEGACY_KNOBS = ("graph_optimization", "xnnpack")


@dataclass(frozen=True)
class Candidate:
    """Everything one trial decides: architecture, runtime, quantization, knobs.

    knobs: the runtime's own settings, named as in the backend catalog
    (edgenas.runtime.backends); threads is common to every runtime.
    """

    arch: ArchConfig
    runtime: str = "onnxruntime"
    quantization: str = "fp32"
    seq_len: int = DEFAULT_SEQ_LEN
    threads: int = 1
    knobs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["arch"] = self.arch.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Candidate":
        rest = {k: v for k, v in values.items() if k not in ("arch", "knobs", *_LEGACY_KNOBS)}
        knobs = {k: values[k] for k in _LEGACY_KNOBS if k in values} | dict(values.get("knobs") or {})
        return cls(arch=ArchConfig.from_dict(values["arch"]), knobs=knobs, **rest)
