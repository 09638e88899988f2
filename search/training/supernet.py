"""A weight-sharing MobileBERT supernet: one set of weights at the space's max
config; any sub-config runs by slicing (a subset of the layers, leading
rows/columns of each weight, the first heads, the first stacked FFNs).

It covers the MobileBertConfig family switches (bottleneck or not, NoNorm or
LayerNorm, trigram input or not, ReLU or GELU, pooler activation or not), so
MobileBERT itself and a pretrained BERT such as MiniLM written as a MobileBERT
share one code path. Each depth has its own pooler and classifier (an exit), so a
shallow sub-config is not stuck with a head made for the deepest one, and with
`layers="first"` one pass trains every depth at once.

Parameter names mirror transformers' MobileBert models, so `extract()` is a
slice of the state dict and checkpoints load by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import transformers
from transformers import MobileBertConfig, MobileBertForQuestionAnswering, MobileBertForSequenceClassification

from edgenas.errors import EdgenasError
from edgenas.runtime.tasks import TASKS, Task
from edgenas.types import ArchConfig, Family

EMBEDDINGS = "mobilebert.embeddings"
#: the weight that is not a plain leading slice when trigram input is on: it concatenates 3 copies
TRIGRAM_KEY = f"{EMBEDDINGS}.embedding_transformation.weight"
INIT_RANGE = 0.02  # MobileBertConfig.initializer_range
#: transformers builds these two norms without passing layer_norm_eps: LayerNorm's default applies
DEFAULT_EPS = 1e-5
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def _linear(layer: nn.Linear, x: torch.Tensor, out_features: int) -> torch.Tensor:
    """`layer` restricted to x's width in and `out_features` out."""
    return F.linear(x, layer.weight[:out_features, : x.shape[-1]], layer.bias[:out_features])


class Norm(nn.Module):
    """MobileBERT's NoNorm (element-wise scale and shift) or a LayerNorm, sliced to the input width."""

    def __init__(self, size: int, kind: str, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.kind, self.eps = kind, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        if self.kind == "layer_norm":
            return F.layer_norm(x, (width,), self.weight[:width], self.bias[:width], self.eps)
        return x * self.weight[:width] + self.bias[:width]


class Probe:
    """Collects first-order (Taylor) importance: |d loss / d mask| of each head, FFN neuron and
    hidden unit, with every mask at 1 (Michel et al. 2019; DynaBERT)."""

    def __init__(self, net: "MobileBertSupernet") -> None:
        a, layers = net.max_arch, net.max_arch.num_hidden_layers
        self.heads = torch.ones(layers, a.num_attention_heads, requires_grad=True)
        self.neurons = torch.ones(layers, a.intermediate_size, requires_grad=True)
        self.hidden = torch.ones(layers + 1, a.hidden_size, requires_grad=True)  # embeddings, then each layer
        self.scores = {name: torch.zeros(getattr(self, name).shape) for name in ("heads", "neurons", "hidden")}

    def accumulate(self) -> None:
        """Add |gradient| of the masks to the scores and clear them."""
        for name, score in self.scores.items():
            mask = getattr(self, name)
            score += mask.grad.abs()
            mask.grad = None


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int, a: ArchConfig, f: Family, max_positions: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, a.embedding_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, a.hidden_size)
        self.token_type_embeddings = nn.Embedding(2, a.hidden_size)
        self.embedding_transformation = nn.Linear((3 if f.trigram_input else 1) * a.embedding_size, a.hidden_size)
        self.LayerNorm = Norm(a.hidden_size, f.normalization_type, DEFAULT_EPS)
        self.dropout = nn.Dropout(dropout)
        self.trigram, self.max_embedding = f.trigram_input, a.embedding_size

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, arch: ArchConfig) -> torch.Tensor:
        e, h = arch.embedding_size, arch.hidden_size
        emb = F.embedding(input_ids, self.word_embeddings.weight[:, :e], padding_idx=0)
        projection = self.embedding_transformation.weight[:h]
        if self.trigram:
            # [next token, this token, previous token], as transformers does
            emb = torch.cat([F.pad(emb[:, 1:], [0, 0, 0, 1]), emb, F.pad(emb[:, :-1], [0, 0, 1, 0])], dim=2)
            projection = trigram_columns(projection, self.max_embedding, e)
        # always projected: where a sub-config has no projection, extract() folds it into its table
        out = F.linear(emb, projection[:, : emb.shape[-1]], self.embedding_transformation.bias[:h])
        positions = self.position_embeddings.weight[: input_ids.shape[1], :h]
        out = out + positions.unsqueeze(0) + self.token_type_embeddings.weight[:, :h][token_type_ids]
        return self.dropout(self.LayerNorm(out))


def trigram_columns(weight: torch.Tensor, full: int, width: int) -> torch.Tensor:
    """The columns of the trigram projection that a `width`-wide embedding uses."""
    return torch.cat([weight[:, k * full : k * full + width] for k in range(3)], dim=1)


class _Dense(nn.Module):
    """A Linear + norm pair under transformers' names (dense, LayerNorm)."""

    def __init__(self, fan_in: int, fan_out: int, f: Family, eps: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)
        self.LayerNorm = Norm(fan_out, f.normalization_type, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, out_features: int, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dropout(_linear(self.dense, x, out_features))
        return self.LayerNorm(y if residual is None else y + residual)


class _Linear1(nn.Module):
    """A module holding one Linear as `dense` (transformers' intermediate layers)."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)


class _SelfAttention(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, true_hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(true_hidden, true_hidden)
        self.key = nn.Linear(true_hidden, true_hidden)
        value_in = true_hidden if f.use_bottleneck_attention else a.hidden_size
        self.value = nn.Linear(value_in, true_hidden)


class _Attention(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, true_hidden: int, dropout: float) -> None:
        super().__init__()
        self.self = _SelfAttention(a, f, true_hidden)
        self.output = _Dense(true_hidden, true_hidden, f, f.layer_norm_eps, 0.0 if f.use_bottleneck else dropout)


class _Output(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, true_hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(a.intermediate_size, true_hidden)
        self.LayerNorm = Norm(true_hidden, f.normalization_type, DEFAULT_EPS)
        self.dropout = nn.Dropout(0.0 if f.use_bottleneck else dropout)
        if f.use_bottleneck:
            self.bottleneck = _Dense(true_hidden, a.hidden_size, f, f.layer_norm_eps, dropout)


class _Bottleneck(nn.Module):
    def __init__(self, a: ArchConfig, f: Family) -> None:
        super().__init__()
        self.input = _Dense(a.hidden_size, a.intra_bottleneck_size, f, f.layer_norm_eps)
        if f.key_query_shared_bottleneck:
            self.attention = _Dense(a.hidden_size, a.intra_bottleneck_size, f, f.layer_norm_eps)


class _FFN(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, true_hidden: int) -> None:
        super().__init__()
        self.intermediate = _Linear1(true_hidden, a.intermediate_size)
        self.output = _Dense(a.intermediate_size, true_hidden, f, f.layer_norm_eps)

    def forward(self, x: torch.Tensor, arch: ArchConfig, act: Callable) -> torch.Tensor:
        inner = act(_linear(self.intermediate.dense, x, arch.intermediate_size))
        return self.output(inner, x.shape[-1], residual=x)


class _Layer(nn.Module):
    """One block: MobileBERT's (bottlenecks, shared key/query input, stacked FFNs) or BERT's."""

    def __init__(self, a: ArchConfig, f: Family, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        true_hidden = a.intra_bottleneck_size if f.use_bottleneck else a.hidden_size
        self.attention = _Attention(a, f, true_hidden, dropout)
        self.intermediate = _Linear1(true_hidden, a.intermediate_size)
        self.output = _Output(a, f, true_hidden, dropout)
        if f.use_bottleneck:
            self.bottleneck = _Bottleneck(a, f)
        self.ffn = nn.ModuleList([_FFN(a, f, true_hidden) for _ in range(a.num_feedforward_networks - 1)])
        self.family, self.attention_dropout, self.act = f, attention_dropout, ACTIVATIONS[f.hidden_act]

    def _inputs(self, hidden: torch.Tensor, arch: ArchConfig) -> tuple[torch.Tensor, ...]:
        """(query input, key input, value input, residual) as transformers' Bottleneck returns them."""
        f = self.family
        if not f.use_bottleneck:
            return hidden, hidden, hidden, hidden
        layer_input = self.bottleneck.input(hidden, arch.intra_bottleneck_size)
        if f.use_bottleneck_attention:
            return layer_input, layer_input, layer_input, layer_input
        shared = self.bottleneck.attention(hidden, arch.intra_bottleneck_size)
        return shared, shared, hidden, layer_input

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, arch: ArchConfig, index: int,
                probe: Probe | None = None) -> torch.Tensor:
        width = arch.intra_bottleneck_size if self.family.use_bottleneck else arch.hidden_size
        heads = arch.num_attention_heads
        batch, seq = hidden.shape[:2]
        q_in, k_in, v_in, layer_input = self._inputs(hidden, arch)
        attn = self.attention.self

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq, heads, width // heads).transpose(1, 2)

        q, k, v = (split(_linear(layer, x, width)) for layer, x in ((attn.query, q_in), (attn.key, k_in), (attn.value, v_in)))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        if probe is not None:
            context = context * probe.heads[index, :heads, None, None]
        context = context.transpose(1, 2).reshape(batch, seq, width)
        x = self.attention.output(context, width, residual=layer_input)
        for ffn in self.ffn[: arch.num_feedforward_networks - 1]:
            x = ffn(x, arch, self.act)
        inner = self.act(_linear(self.intermediate.dense, x, arch.intermediate_size))
        if probe is not None:
            inner = inner * probe.neurons[index, : arch.intermediate_size]
        out = self.output.LayerNorm(self.output.dropout(_linear(self.output.dense, inner, width)) + x)
        if self.family.use_bottleneck:
            out = self.output.bottleneck(out, arch.hidden_size, residual=hidden)
        return out


class _Encoder(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Layer(a, f, dropout, attention_dropout) for _ in range(a.num_hidden_layers)])


class _Backbone(nn.Module):
    def __init__(self, a: ArchConfig, f: Family, vocab_size: int, max_positions: int, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.embeddings = _Embeddings(vocab_size, a, f, max_positions, dropout)
        self.encoder = _Encoder(a, f, dropout, attention_dropout)


class _Pooler(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class _Exit(nn.Module):
    """The head of one depth: pooler + classifier, or the QA span head."""

    def __init__(self, hidden: int, num_labels: int, task: Task, pooler: bool) -> None:
        super().__init__()
        if task.spans:
            self.qa_outputs = nn.Linear(hidden, 2)
            return
        if pooler:
            self.pooler = _Pooler(hidden)
        self.classifier = nn.Linear(hidden, num_labels)


class MobileBertSupernet(nn.Module):
    """MobileBERT at `max_arch` in `family`; `forward(..., arch=sub)` runs a slice of it."""

    def __init__(
        self,
        max_arch: ArchConfig,
        vocab_size: int,
        num_labels: int,
        task: str = "classification",
        family: Family = Family(),
        layers: str = "first",
        max_position_embeddings: int = 512,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise EdgenasError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        if layers not in ("first", "spread"):
            raise EdgenasError(f"unknown layer selection {layers!r} (first or spread)")
        if family.use_bottleneck and not (family.use_bottleneck_attention or family.key_query_shared_bottleneck):
            raise EdgenasError("a bottleneck needs use_bottleneck_attention or key_query_shared_bottleneck "
                               "(transformers' MobileBERT has no other wiring)")
        self.max_arch, self.vocab_size, self.task, self.family, self.layers = max_arch, vocab_size, task, family, layers
        self.kind = TASKS[task]
        self.num_labels = 2 if self.kind.spans else num_labels  # spans: a start and an end logit per token
        self.max_position_embeddings = max_position_embeddings
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.check_arch(max_arch)
        self.mobilebert = _Backbone(max_arch, family, vocab_size, max_position_embeddings, dropout, attention_dropout)
        self.exits = nn.ModuleList([_Exit(max_arch.hidden_size, self.num_labels, self.kind, family.classifier_activation)
                                    for _ in range(max_arch.num_hidden_layers)])
        self.head_dropout = nn.Dropout(dropout)
        self.apply(_init_weights)

    # ------------------------------------------------------------------ running a sub-config

    def layer_indices(self, depth: int) -> list[int]:
        """The supernet layers a `depth`-layer sub-config runs, in order.

        "spread" keeps every (L/depth)-th layer counted down from the top, so the
        top layer, whose output the pooler and classifier were trained on, always
        stays (measured on tweets: far better inherited accuracy than the first k)."""
        total = self.max_arch.num_hidden_layers
        if self.layers == "first" or depth >= total:
            return list(range(min(depth, total)))
        return sorted({total - 1 - int(round(j * total / depth)) for j in range(depth)})

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        arch: ArchConfig | None = None,
    ) -> torch.Tensor:
        """Logits of sub-config `arch` (default: max); a QA net's are (batch, 2, seq), start then end."""
        arch = self.check_arch(arch)
        return self.forward_depths(input_ids, attention_mask, token_type_ids, arch)[arch.num_hidden_layers]

    def forward_depths(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        arch: ArchConfig,
        depths: list[int] | None = None,
        probe: Probe | None = None,
        hiddens: dict[int, dict[int, torch.Tensor]] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Logits of `arch` cut at each depth in `depths` (default: arch's own), each through its own exit.

        With first-k layer selection one pass serves every depth. A `hiddens` dict receives each depth's
        hidden states by supernet layer index (-1: the embeddings' output), for hidden-state distillation."""
        depths = sorted(set(depths or [arch.num_hidden_layers]))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask[:, None, None, :].bool()
        if self.layers == "first":
            return self._run(input_ids, token_type_ids, mask, arch, list(range(max(depths))), depths, probe, hiddens)
        return {d: self._run(input_ids, token_type_ids, mask, arch, self.layer_indices(d), [d], probe, hiddens)[d]
                for d in depths}

    def _run(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, arch: ArchConfig,
             indices: list[int], depths: list[int], probe: Probe | None,
             hiddens: dict[int, dict[int, torch.Tensor]] | None = None) -> dict[int, torch.Tensor]:
        hidden = self.mobilebert.embeddings(ids, types, arch)
        if probe is not None:
            hidden = hidden * probe.hidden[0, : arch.hidden_size]
        out, states = {}, {-1: hidden}
        for position, index in enumerate(indices, start=1):
            hidden = self.mobilebert.encoder.layer[index](hidden, mask, arch, index, probe)
            if probe is not None:
                hidden = hidden * probe.hidden[index + 1, : arch.hidden_size]
            states[index] = hidden
            if position in depths:
                out[position] = self._head(hidden, arch, position)
        if hiddens is not None:
            for depth in depths:
                hiddens[depth] = {i: states[i] for i in [-1, *indices[:depth]]}
        return out

    def _head(self, hidden: torch.Tensor, arch: ArchConfig, depth: int) -> torch.Tensor:
        head = self.exits[depth - 1]
        if self.kind.spans:  # (batch, 2, seq): start then end logits, the artifacts' own layout
            return _linear(head.qa_outputs, hidden, 2).transpose(1, 2)
        pooled = hidden[:, 0]
        if self.family.classifier_activation:
            pooled = torch.tanh(_linear(head.pooler.dense, pooled, arch.hidden_size))
        return _linear(head.classifier, self.head_dropout(pooled), self.num_labels)

    def hidden_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                     arch: ArchConfig | None = None) -> torch.Tensor:
        """The last hidden state of sub-config `arch` (what transformers' `last_hidden_state` is)."""
        arch = self.check_arch(arch)
        hidden = self.mobilebert.embeddings(input_ids, token_type_ids, arch)
        mask = attention_mask[:, None, None, :].bool()
        for index in self.layer_indices(arch.num_hidden_layers):
            hidden = self.mobilebert.encoder.layer[index](hidden, mask, arch, index)
        return hidden

    def check_arch(self, arch: ArchConfig | None) -> ArchConfig:
        """`arch` (or the max) after checking that it is a slice of this supernet."""
        if arch is None:
            return self.max_arch
        too_big = [k for k, v in arch.to_dict().items() if v > getattr(self.max_arch, k)]
        if too_big:
            raise EdgenasError(f"{arch.short()} is larger than the supernet {self.max_arch.short()} in {too_big}")
        width = arch.intra_bottleneck_size if self.family.use_bottleneck else arch.hidden_size
        if width % arch.num_attention_heads:
            raise EdgenasError(f"{arch.short()}: num_attention_heads must divide the attention width {width}")
        if not self.family.use_bottleneck:
            head_size = self.max_arch.hidden_size // self.max_arch.num_attention_heads
            if arch.intra_bottleneck_size != arch.hidden_size or width // arch.num_attention_heads != head_size:
                raise EdgenasError(f"{arch.short()}: without a bottleneck, heads are {head_size} wide and the "
                                   "attention is as wide as the hidden size")
        return arch

    # ------------------------------------------------------------------ extraction

    def hf_config(self, arch: ArchConfig | None = None) -> MobileBertConfig:
        """The transformers config of sub-config `arch`."""
        arch = self.check_arch(arch)
        return MobileBertConfig(
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings,
            num_labels=self.num_labels,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.attention_dropout,
            **arch.to_dict(),
            **self.family.to_dict(),
        )

    def extract(self, arch: ArchConfig | None = None) -> MobileBertForSequenceClassification | MobileBertForQuestionAnswering:
        """A standalone transformers model (eval mode) with the sliced weights of `arch`."""
        arch = self.check_arch(arch)
        model = getattr(transformers, self.kind.architecture)(self.hf_config(arch))
        with torch.no_grad():
            model.load_state_dict(self.sliced_state(arch, model.state_dict()))
        return model.eval()

    def sliced_state(self, arch: ArchConfig, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """For every key of a transformers model of `arch`, the slice of this supernet it holds."""
        source = self.state_dict()
        rename = self._target_to_source(arch)
        out = {}
        for key, like in target.items():
            name = rename(key)
            if name not in source:
                out[key] = like  # buffers transformers keeps (position_ids)
                continue
            tensor = source[name]
            if name == TRIGRAM_KEY and self.family.trigram_input:
                tensor = trigram_columns(tensor, self.max_arch.embedding_size, like.shape[1] // 3)
            out[key] = tensor[tuple(slice(0, n) for n in like.shape)].clone()
        if not self.family.trigram_input and arch.embedding_size == arch.hidden_size:
            # transformers applies no projection here: fold the supernet's into the table
            out[f"{EMBEDDINGS}.word_embeddings.weight"] = self.folded_embeddings(arch)
        return out

    def folded_embeddings(self, arch: ArchConfig) -> torch.Tensor:
        """Word table times projection, (vocab, hidden): the embedding a projection-free model uses."""
        emb = self.mobilebert.embeddings
        e, h = arch.embedding_size, arch.hidden_size
        return F.linear(emb.word_embeddings.weight[:, :e], emb.embedding_transformation.weight[:h, :e],
                        emb.embedding_transformation.bias[:h]).detach().clone()

    def _target_to_source(self, arch: ArchConfig) -> Callable[[str], str]:
        indices = self.layer_indices(arch.num_hidden_layers)
        exit_prefix = f"exits.{arch.num_hidden_layers - 1}."

        def rename(key: str) -> str:
            if key.startswith("mobilebert.encoder.layer."):
                rest = key.removeprefix("mobilebert.encoder.layer.")
                position, tail = rest.split(".", 1)
                return f"mobilebert.encoder.layer.{indices[int(position)]}.{tail}"
            if key.startswith("mobilebert.pooler."):
                return exit_prefix + key.removeprefix("mobilebert.")
            if key.startswith(("classifier.", "qa_outputs.")):
                return exit_prefix + key
            return key

        return rename

    # ------------------------------------------------------------------ loading weights

    def load_checkpoint(self, checkpoint: str | Path) -> list[str]:
        """Copy weights from a local MobileBERT or BERT checkpoint (any of their task heads).

        Each tensor fills the overlapping leading block; a BERT's word embedding
        becomes a truncated-SVD factorisation when this supernet's is narrower or
        projected. The pooler (and a classifier with the same labels) seed every
        depth's exit. Returns the supernet keys it did not cover.
        """
        source = read_checkpoint(Path(checkpoint))
        word = source.get("embeddings.word_embeddings.weight")
        if word is None:
            raise EdgenasError(f"{checkpoint}: no word embeddings: not a BERT or MobileBERT checkpoint")
        if word.shape[0] != self.vocab_size:
            raise EdgenasError(f"{checkpoint}: vocabulary of {word.shape[0]} tokens, the tokenizer has {self.vocab_size}")
        has_projection = "embeddings.embedding_transformation.weight" in source
        missing = []
        with torch.no_grad():
            for key, param in self.named_parameters():
                name = _checkpoint_name(key)
                if not has_projection and name.startswith("embeddings.") and (
                        "word_embeddings" in name or "embedding_transformation" in name):
                    continue  # set below from the SVD
                value = source.get(name)
                if value is None or not _fits(param, value, key):
                    missing.append(key)
                    continue
                _copy_overlap(param, value, key, word.shape[1], self.max_arch.embedding_size)
            if not has_projection:
                self._factorise_embeddings(word.float())
        return missing

    def _factorise_embeddings(self, table: torch.Tensor) -> None:
        """word = U S, projection = V (truncated SVD of the table): every leading slice of the
        embedding width is the best low-rank approximation of the pretrained table."""
        if self.family.trigram_input:
            raise EdgenasError("a BERT checkpoint has no trigram embedding: use a family with trigram_input false")
        emb = self.mobilebert.embeddings
        u, s, vh = torch.linalg.svd(table, full_matrices=False)
        width, hidden = emb.word_embeddings.weight.shape[1], emb.embedding_transformation.weight.shape[0]
        rank = min(width, len(s))
        emb.word_embeddings.weight.zero_()
        emb.word_embeddings.weight[:, :rank] = (u[:, :rank] * s[:rank])
        emb.embedding_transformation.weight.zero_()
        emb.embedding_transformation.weight[: min(hidden, vh.shape[1]), :rank] = vh[:rank, :hidden].T
        emb.embedding_transformation.bias.zero_()

    # ------------------------------------------------------------------ importance order (DynaBERT)

    def reorder(self, heads: torch.Tensor, neurons: torch.Tensor, hidden: torch.Tensor) -> None:
        """Permute heads, FFN neurons and hidden units (scores from a Probe) most important first,
        so every leading slice keeps the most important parts. The function is unchanged."""
        if self.family.use_bottleneck:
            raise EdgenasError("importance reordering covers families without a bottleneck")
        head_size = self.max_arch.hidden_size // self.max_arch.num_attention_heads
        hidden_order = torch.argsort(hidden.sum(0), descending=True)
        with torch.no_grad():
            for key, param in self.named_parameters():
                for dim in _hidden_dims(key):
                    param.copy_(param.index_select(dim, hidden_order))
            for index, layer in enumerate(self.mobilebert.encoder.layer):
                head_order = torch.argsort(heads[index], descending=True)
                rows = (head_order[:, None] * head_size + torch.arange(head_size)).reshape(-1)
                for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                    _permute(linear, rows, dim=0)
                _permute(layer.attention.output.dense, rows, dim=1)
                neuron_order = torch.argsort(neurons[index], descending=True)
                _permute(layer.intermediate.dense, neuron_order, dim=0)
                _permute(layer.output.dense, neuron_order, dim=1)

    def importance(self, batches: Iterator[tuple[torch.Tensor, ...]], loss_fn: Callable) -> Probe:
        """Taylor importance of heads, neurons and hidden units over `batches` at the max config.

        `loss_fn(logits, batch)` gives the loss of one batch (ids, mask, types, ...)."""
        probe = Probe(self)
        was_training = self.training
        self.eval()
        for batch in batches:
            logits = self.forward_depths(*batch[:3], self.max_arch, probe=probe)[self.max_arch.num_hidden_layers]
            loss_fn(logits, batch).backward()
            probe.accumulate()
        self.zero_grad(set_to_none=True)
        self.train(was_training)
        return probe


#: which dimensions of a no-bottleneck supernet parameter index hidden units, by name ending
#: (the word table's columns are SVD components, attention rows are heads, FFN rows are neurons)
_HIDDEN_DIMS = {
    "position_embeddings.weight": (1,), "token_type_embeddings.weight": (1,),
    "embedding_transformation.weight": (0,), "embedding_transformation.bias": (0,),
    "LayerNorm.weight": (0,), "LayerNorm.bias": (0,),
    "query.weight": (1,), "key.weight": (1,), "value.weight": (1,), "intermediate.dense.weight": (1,),
    "output.dense.weight": (0,), "output.dense.bias": (0,),
    "pooler.dense.weight": (0, 1), "pooler.dense.bias": (0,),
    "classifier.weight": (1,), "qa_outputs.weight": (1,),
}


def _hidden_dims(key: str) -> tuple[int, ...]:
    return next((dims for ending, dims in _HIDDEN_DIMS.items() if key.endswith(ending)), ())


def _permute(linear: nn.Linear, order: torch.Tensor, dim: int) -> None:
    linear.weight.copy_(linear.weight.index_select(dim, order))
    if dim == 0:
        linear.bias.copy_(linear.bias.index_select(0, order))


def _checkpoint_name(key: str) -> str:
    """The name of a supernet parameter in a normalised checkpoint (see read_checkpoint)."""
    if key.startswith("mobilebert."):
        return key.removeprefix("mobilebert.")
    if key.startswith("exits."):
        return key.split(".", 2)[2]  # every depth's exit is seeded from the one head
    return key


def _fits(param: torch.Tensor, value: torch.Tensor, key: str) -> bool:
    """A head copies only when its label count matches; everything else fills the overlap."""
    if key.endswith(("classifier.weight", "classifier.bias", "qa_outputs.weight", "qa_outputs.bias")):
        return param.shape[0] == value.shape[0]
    return param.ndim == value.ndim


def _copy_overlap(param: torch.Tensor, value: torch.Tensor, key: str, source_embedding: int, embedding: int) -> None:
    if key == TRIGRAM_KEY and value.shape[1] == 3 * source_embedding:
        width = min(source_embedding, embedding)
        value = trigram_columns(value, source_embedding, width)
        for k in range(3):
            block = value[:, k * width : (k + 1) * width]
            rows = min(block.shape[0], param.shape[0])
            param[:rows, k * embedding : k * embedding + width] = block[:rows]
        return
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(param.shape, value.shape))
    param[overlap] = value[overlap].to(param.dtype)


def read_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a local HF checkpoint dir, keyed without the `bert.`/`mobilebert.` prefix."""
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(directory / "model.safetensors"))
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise EdgenasError(f"{directory}: no model.safetensors or pytorch_model.bin (expected a local checkpoint)")
    return {key.removeprefix("bert.").removeprefix("mobilebert."): value for key, value in state.items()}


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
