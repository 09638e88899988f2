"""A weight-sharing MobileBERT supernet: one set of weights at the space's max
config; any sub-config runs by slicing (first k layers, leading rows/columns
of each weight, first heads, first stacked FFNs).

Parameter names mirror transformers' MobileBert models, so `extract()` is a
slice of the state dict and a google/mobilebert-uncased checkpoint loads by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MobileBertConfig, MobileBertForQuestionAnswering, MobileBertForSequenceClassification

from edgenas.errors import EdgenasError
from edgenas.types import ArchConfig

TASKS = ("classification", "qa")
#: the one weight that is not a leading slice: trigram embeddings concatenate 3 copies
TRIGRAM_KEY = "mobilebert.embeddings.embedding_transformation.weight"
INIT_RANGE = 0.02  # MobileBertConfig.initializer_range


def _linear(layer: nn.Linear, x: torch.Tensor, out_features: int) -> torch.Tensor:
    """`layer` restricted to x's width in and `out_features` out."""
    return F.linear(x, layer.weight[:out_features, : x.shape[-1]], layer.bias[:out_features])


class NoNorm(nn.Module):
    """MobileBERT's element-wise scale and shift, sliced to the input width."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        return x * self.weight[:width] + self.bias[:width]


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int, max_arch: ArchConfig, max_positions: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, max_arch.embedding_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, max_arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(2, max_arch.hidden_size)
        self.embedding_transformation = nn.Linear(3 * max_arch.embedding_size, max_arch.hidden_size)
        self.LayerNorm = NoNorm(max_arch.hidden_size)
        self.max_embedding = max_arch.embedding_size

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        e, h = arch.embedding_size, arch.hidden_size
        emb = self.word_embeddings.weight[:, :e][input_ids]
        # trigram input: [next token, this token, previous token], as transformers does
        trigram = torch.cat([F.pad(emb[:, 1:], [0, 0, 0, 1]), emb, F.pad(emb[:, :-1], [0, 0, 1, 0])], dim=2)
        weight = trigram_columns(self.embedding_transformation.weight[:h], self.max_embedding, e)
        out = F.linear(trigram, weight, self.embedding_transformation.bias[:h])
        positions = self.position_embeddings.weight[: input_ids.shape[1], :h]
        out = out + positions.unsqueeze(0) + self.token_type_embeddings.weight[:, :h][token_type_ids]
        return self.LayerNorm(out)


def trigram_columns(weight: torch.Tensor, full: int, width: int) -> torch.Tensor:
    """The columns of the trigram projection that a `width`-wide embedding uses."""
    return torch.cat([weight[:, k * full : k * full + width] for k in range(3)], dim=1)


class _Dense(nn.Module):
    """A Linear + NoNorm pair under transformers' names (dense, LayerNorm)."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)
        self.LayerNorm = NoNorm(fan_out)

    def forward(self, x: torch.Tensor, out_features: int, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = _linear(self.dense, x, out_features)
        return self.LayerNorm(y if residual is None else y + residual)


class _Linear1(nn.Module):
    """A module holding one Linear as `dense` (transformers' intermediate layers)."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)


class _SelfAttention(nn.Module):
    def __init__(self, a: ArchConfig) -> None:
        super().__init__()
        self.query = nn.Linear(a.intra_bottleneck_size, a.intra_bottleneck_size)
        self.key = nn.Linear(a.intra_bottleneck_size, a.intra_bottleneck_size)
        self.value = nn.Linear(a.hidden_size, a.intra_bottleneck_size)


class _Attention(nn.Module):
    def __init__(self, a: ArchConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(a)
        self.output = _Dense(a.intra_bottleneck_size, a.intra_bottleneck_size)


class _Output(nn.Module):
    def __init__(self, a: ArchConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(a.intermediate_size, a.intra_bottleneck_size)
        self.LayerNorm = NoNorm(a.intra_bottleneck_size)
        self.bottleneck = _Dense(a.intra_bottleneck_size, a.hidden_size)


class _Bottleneck(nn.Module):
    def __init__(self, a: ArchConfig) -> None:
        super().__init__()
        self.input = _Dense(a.hidden_size, a.intra_bottleneck_size)
        self.attention = _Dense(a.hidden_size, a.intra_bottleneck_size)


class _FFN(nn.Module):
    def __init__(self, a: ArchConfig) -> None:
        super().__init__()
        self.intermediate = _Linear1(a.intra_bottleneck_size, a.intermediate_size)
        self.output = _Dense(a.intermediate_size, a.intra_bottleneck_size)

    def forward(self, x: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        inner = F.relu(_linear(self.intermediate.dense, x, arch.intermediate_size))
        return self.output(inner, arch.intra_bottleneck_size, residual=x)


class _Layer(nn.Module):
    """MobileBERT's block: bottlenecks, shared key/query input, stacked FFNs, NoNorm, ReLU."""

    def __init__(self, a: ArchConfig, attention_dropout: float) -> None:
        super().__init__()
        self.attention = _Attention(a)
        self.intermediate = _Linear1(a.intra_bottleneck_size, a.intermediate_size)
        self.output = _Output(a)
        self.bottleneck = _Bottleneck(a)
        self.ffn = nn.ModuleList([_FFN(a) for _ in range(a.num_feedforward_networks - 1)])
        self.attention_dropout = attention_dropout

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        b = arch.intra_bottleneck_size
        layer_input = self.bottleneck.input(hidden, b)
        shared = self.bottleneck.attention(hidden, b)
        attn = self.attention.self
        heads = arch.num_attention_heads
        batch, seq = hidden.shape[:2]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq, heads, b // heads).transpose(1, 2)

        q, k = split(_linear(attn.query, shared, b)), split(_linear(attn.key, shared, b))
        v = split(_linear(attn.value, hidden, b))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(batch, seq, b)
        x = self.attention.output(context, b, residual=layer_input)
        for ffn in self.ffn[: arch.num_feedforward_networks - 1]:
            x = ffn(x, arch)
        inner = F.relu(_linear(self.intermediate.dense, x, arch.intermediate_size))
        out = self.output.LayerNorm(_linear(self.output.dense, inner, b) + x)
        return self.output.bottleneck(out, arch.hidden_size, residual=hidden)


class _Encoder(nn.Module):
    def __init__(self, a: ArchConfig, attention_dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Layer(a, attention_dropout) for _ in range(a.num_hidden_layers)])


class _Pooler(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class _Backbone(nn.Module):
    def __init__(self, a: ArchConfig, vocab_size: int, max_positions: int, pooler: bool, dropout: float) -> None:
        super().__init__()
        self.embeddings = _Embeddings(vocab_size, a, max_positions)
        self.encoder = _Encoder(a, dropout)
        if pooler:
            self.pooler = _Pooler(a.hidden_size)


class MobileBertSupernet(nn.Module):
    """MobileBERT at `max_arch`; `forward(..., arch=sub)` runs a slice of it."""

    def __init__(
        self,
        max_arch: ArchConfig,
        vocab_size: int,
        num_labels: int,
        task: str = "classification",
        max_position_embeddings: int = 512,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise EdgenasError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        if max_arch.intra_bottleneck_size % max_arch.num_attention_heads:
            raise EdgenasError(f"{max_arch.short()}: num_attention_heads must divide intra_bottleneck_size")
        self.max_arch, self.vocab_size, self.task = max_arch, vocab_size, task
        self.num_labels = 2 if task == "qa" else num_labels
        self.max_position_embeddings = max_position_embeddings
        self.attention_dropout = attention_dropout
        classify = task == "classification"
        self.mobilebert = _Backbone(max_arch, vocab_size, max_position_embeddings, classify, attention_dropout)
        head = nn.Linear(max_arch.hidden_size, self.num_labels)
        if classify:
            self.classifier = head
        else:
            self.qa_outputs = head
        self.apply(_init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        arch: ArchConfig | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits of sub-config `arch` (default: max); QA returns (start, end) logits."""
        arch = self.check_arch(arch)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.mobilebert.embeddings(input_ids, token_type_ids, arch)
        mask = attention_mask[:, None, None, :].bool()
        for layer in self.mobilebert.encoder.layer[: arch.num_hidden_layers]:
            hidden = layer(hidden, mask, arch)
        if self.task == "qa":
            logits = _linear(self.qa_outputs, hidden, 2)
            return logits[..., 0].contiguous(), logits[..., 1].contiguous()
        pooled = torch.tanh(_linear(self.mobilebert.pooler.dense, hidden[:, 0], arch.hidden_size))
        return _linear(self.classifier, pooled, self.num_labels)

    def check_arch(self, arch: ArchConfig | None) -> ArchConfig:
        """`arch` (or the max) after checking that it is a slice of this supernet."""
        if arch is None:
            return self.max_arch
        too_big = [k for k, v in arch.to_dict().items() if v > getattr(self.max_arch, k)]
        if too_big:
            raise EdgenasError(f"{arch.short()} is larger than the supernet {self.max_arch.short()} in {too_big}")
        if arch.intra_bottleneck_size % arch.num_attention_heads:
            raise EdgenasError(f"{arch.short()}: num_attention_heads must divide intra_bottleneck_size")
        return arch

    def hf_config(self, arch: ArchConfig | None = None) -> MobileBertConfig:
        """The transformers config of sub-config `arch`."""
        arch = self.check_arch(arch)
        return MobileBertConfig(
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings,
            num_labels=self.num_labels,
            attention_probs_dropout_prob=self.attention_dropout,
            **arch.to_dict(),
        )

    def extract(self, arch: ArchConfig | None = None) -> MobileBertForSequenceClassification | MobileBertForQuestionAnswering:
        """A standalone transformers model (eval mode) with the sliced weights of `arch`."""
        config = self.hf_config(arch)
        cls = MobileBertForQuestionAnswering if self.task == "qa" else MobileBertForSequenceClassification
        model = cls(config)
        target = model.state_dict()
        model.load_state_dict(slice_state(self.state_dict(), target, self.max_arch.embedding_size))
        return model.eval()

    def load_mobilebert(self, checkpoint: str | Path) -> list[str]:
        """Copy weights from a local MobileBERT checkpoint (google/mobilebert-uncased layout).

        Each tensor fills the overlapping leading block; returns the supernet keys it did not cover.
        """
        source = _read_checkpoint(Path(checkpoint))
        vocab = source.get("mobilebert.embeddings.word_embeddings.weight")
        if vocab is None:
            raise EdgenasError(f"{checkpoint}: no mobilebert.embeddings.word_embeddings.weight: not a MobileBERT checkpoint")
        if vocab.shape[0] != self.vocab_size:
            raise EdgenasError(f"{checkpoint}: vocabulary of {vocab.shape[0]} tokens, the tokenizer has {self.vocab_size}")
        source_embedding = vocab.shape[1]
        missing = []
        with torch.no_grad():
            for key, param in self.state_dict().items():
                if key not in source:
                    missing.append(key)
                    continue
                _copy_overlap(param, source[key], key, source_embedding, self.max_arch.embedding_size)
        return missing


def slice_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], full_embedding: int) -> dict:
    """For every key of `target`, the leading slice of `source` of the target's shape."""
    out = {}
    for key, like in target.items():
        if key not in source:
            # buffers transformers keeps (position_ids); keep the target's own
            out[key] = like
            continue
        tensor = source[key]
        if key == TRIGRAM_KEY:
            tensor = trigram_columns(tensor, full_embedding, like.shape[1] // 3)
        out[key] = tensor[tuple(slice(0, n) for n in like.shape)].clone()
    return out


def _copy_overlap(param: torch.Tensor, value: torch.Tensor, key: str, source_embedding: int, embedding: int) -> None:
    if key == TRIGRAM_KEY:
        width = min(source_embedding, embedding)
        value = trigram_columns(value, source_embedding, width)
        for k in range(3):
            block = value[:, k * width : (k + 1) * width]
            rows = min(block.shape[0], param.shape[0])
            param[:rows, k * embedding : k * embedding + width] = block[:rows]
        return
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(param.shape, value.shape))
    param[overlap] = value[overlap].to(param.dtype)


def _read_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a local HF checkpoint dir, keys prefixed `mobilebert.` like the task models."""
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(directory / "model.safetensors"))
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise EdgenasError(f"{directory}: no model.safetensors or pytorch_model.bin (expected a local MobileBERT checkpoint)")
    if not any(key.startswith("mobilebert.") for key in state):
        # a bare MobileBertModel checkpoint
        state = {f"mobilebert.{key}": value for key, value in state.items()}
    return state


def _init_weights(module: nn.Module) -> None:
    """transformers' MobileBERT init: N(0, 0.02) weights, zero biases, zero padding row."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=INIT_RANGE)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_RANGE)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

