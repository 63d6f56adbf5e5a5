"""wav2vec2 Transformer encoder layers with per-layer sizes and optional head / FFN-unit / block gates."""
import copy
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.models.wav2vec.wav2vec2 import TransformerEncoder
from fairseq.modules import LayerNorm
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from torch import nn

from ..io.errors import ConfigError
from .attention import OutputBias, PrunableSelfAttention
from .hard_concrete import HardConcrete, combine
from .kept_units import Selection, kept_units

GateFactory = Callable[[int], HardConcrete]
#: the gate attributes of :class:`PrunableEncoderLayer` (``None`` where absent)
LAYER_GATES = ("head_gate", "attn_layer_gate", "ffn_unit_gate", "ffn_layer_gate")


class PrunableEncoderLayer(nn.Module):
    """Computes what fairseq's ``TransformerSentenceEncoderLayer`` computes (post- or pre-LayerNorm), with
    ``num_heads`` attention heads and ``ffn_units`` FFN units in this layer, and optional gates:

    * ``head_gate`` (one per head) and ``attn_layer_gate`` (one for the whole attention block) multiply each
      head's output before ``out_proj``;
    * ``ffn_unit_gate`` (one per unit) and ``ffn_layer_gate`` (whole block) multiply the FFN hidden units
      before ``fc2``.

    A block gate therefore scales the block's computation but not its output bias: a block with every head
    (or unit) closed leaves only that bias, and that is what export keeps (:meth:`pruned`). Sub-module names
    are fairseq's.

    Args mirror ``Wav2Vec2Config``: ``embed_dim`` (``encoder_embed_dim``), ``dropout``,
    ``attention_dropout``, ``activation_dropout``, ``activation_fn``, ``layer_norm_first``;
    ``head_dim`` is ``encoder_embed_dim // encoder_attention_heads`` of the original model.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        ffn_units: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        activation_fn: str = "gelu",
        layer_norm_first: bool = False,
        make_gate: Optional[GateFactory] = None,
        prune_heads: bool = False,
        prune_attention_layer: bool = False,
        prune_ffn_units: bool = False,
        prune_ffn_layer: bool = False,
    ) -> None:
        super().__init__()
        self.embedding_dim = embed_dim
        self.layer_norm_first = layer_norm_first
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.self_attn = PrunableSelfAttention(embed_dim, num_heads, head_dim, dropout=attention_dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.self_attn_layer_norm = LayerNorm(embed_dim)
        self.ffn_units = ffn_units
        if ffn_units > 0:
            self.fc1 = nn.Linear(embed_dim, ffn_units)
            self.fc2 = nn.Linear(ffn_units, embed_dim)
        else:
            self.fc1 = None
            self.fc2 = OutputBias(embed_dim)
        self.final_layer_norm = LayerNorm(embed_dim)

        def gate(wanted: bool, n: int) -> Optional[HardConcrete]:
            return make_gate(n) if wanted and n > 0 and make_gate is not None else None

        self.head_gate = gate(prune_heads, num_heads)
        self.attn_layer_gate = gate(prune_attention_layer, num_heads and 1)
        self.ffn_unit_gate = gate(prune_ffn_units, ffn_units)
        self.ffn_layer_gate = gate(prune_ffn_layer, ffn_units and 1)

    @staticmethod
    def _mask(n: int, *gates: Optional[HardConcrete]) -> Optional[torch.Tensor]:
        """The product of the gates' masks over ``n`` units ``(n,)`` (a block gate alone covers them all)."""
        mask = combine(*(g.mask() if g is not None else None for g in gates))
        return None if mask is None else mask.expand(n)

    def _attention(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        head_mask = self._mask(self.self_attn.num_heads, self.head_gate, self.attn_layer_gate)
        return self.dropout1(self.self_attn(x, padding_mask, head_mask))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN block, ``(T, B, C)`` -> ``(T, B, C)``: ``fc2(act(fc1(x)))`` with the unit and block gates'
        masks on the hidden units; no unit left: ``fc2``'s bias."""
        if self.fc1 is None:
            return self.fc2(x[..., :0])
        h = self.dropout2(self.activation_fn(self.fc1(x)))
        unit_mask = self._mask(self.ffn_units, self.ffn_unit_gate, self.ffn_layer_gate)
        if unit_mask is None:
            return self.fc2(h)
        # scaling the hidden units == scaling the columns of fc2 (a weight-sized product)
        return F.linear(h, self.fc2.weight * unit_mask.to(h.dtype), self.fc2.bias)

    def forward(
        self,
        x: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
        self_attn_padding_mask: Optional[torch.Tensor] = None,
        need_weights: bool = False,
        att_args=None,
    ):
        """``x``: ``(T, B, C)``; ``self_attn_padding_mask``: ``(B, T)``, True at padding. Returns
        ``(x, (None, ffn_output))`` like fairseq's layer (attention weights are never returned)."""
        if self_attn_mask is not None:
            raise NotImplementedError("wav2vec2 encoder layers are never called with an attention mask")
        residual = x
        if self.layer_norm_first:
            x = residual + self._attention(self.self_attn_layer_norm(x), self_attn_padding_mask)
            residual = x
            x = self.feed_forward(self.final_layer_norm(x))
            layer_result = x
            x = residual + self.dropout3(x)
        else:
            x = self.self_attn_layer_norm(residual + self._attention(x, self_attn_padding_mask))
            residual = x
            x = self.feed_forward(x)
            layer_result = x
            x = self.final_layer_norm(residual + self.dropout3(x))
        return x, (None, layer_result)

    def kept_heads(self) -> Selection:
        """The heads export keeps (eval-mode head mask times block mask non-zero)."""
        return kept_units(self.self_attn.num_heads, self.head_gate, self.attn_layer_gate)

    def kept_ffn_units(self, round_to: int = 1) -> Selection:
        """The FFN units export keeps, their count rounded up to a multiple of ``round_to`` with closed units."""
        return kept_units(self.ffn_units, self.ffn_unit_gate, self.ffn_layer_gate, round_to=round_to)

    @torch.no_grad()
    def pruned(self, round_to: int = 1) -> "PrunableEncoderLayer":
        """A copy without gates computing what this layer computes in eval mode: the kept heads
        (:meth:`PrunableSelfAttention.pruned`), the ``fc1`` rows of the kept FFN units and their ``fc2`` columns
        scaled by the unit masks; a block with nothing kept leaves its output bias."""
        out = copy.deepcopy(self)
        for name in LAYER_GATES:
            setattr(out, name, None)
        out.self_attn = self.self_attn.pruned(self.kept_heads())
        units = self.kept_ffn_units(round_to)
        out.ffn_units = units.size
        out.fc1, out.fc2 = None, OutputBias(self.embedding_dim)
        if units.size:
            out.fc1 = nn.Linear(self.embedding_dim, units.size)
            out.fc1.weight.copy_(self.fc1.weight[units.index])
            out.fc1.bias.copy_(self.fc1.bias[units.index])
            out.fc2 = nn.Linear(units.size, self.embedding_dim)
            out.fc2.weight.copy_(self.fc2.weight[:, units.index] * units.scale)
        out.fc2.bias.copy_(self.fc2.bias)
        return out


class PrunableTransformerEncoder(TransformerEncoder):
    """fairseq's wav2vec2 ``TransformerEncoder`` (positional conv, layer norm, layerdrop, padding to
    ``required_seq_len_multiple``) whose layers, built through its ``build_encoder_layer`` extension point,
    are :class:`PrunableEncoderLayer` with per-layer ``attention_heads`` and ``ffn_units``."""

    def __init__(
        self,
        args,
        attention_heads: Sequence[int],
        ffn_units: Sequence[int],
        make_gate: Optional[GateFactory] = None,
        prune_heads: bool = False,
        prune_attention_layers: bool = False,
        prune_ffn_units: bool = False,
        prune_ffn_layers: bool = False,
    ) -> None:
        if args.layer_type != "transformer":
            raise ConfigError(f"only layer_type=transformer can be pruned, this model has {args.layer_type!r}")
        # read by build_encoder_layer, which fairseq's __init__ calls before returning
        self.__dict__["_plan"] = dict(
            attention_heads=list(attention_heads),
            ffn_units=list(ffn_units),
            head_dim=args.encoder_embed_dim // args.encoder_attention_heads,
            make_gate=make_gate,
            flags=dict(
                prune_heads=prune_heads,
                prune_attention_layer=prune_attention_layers,
                prune_ffn_units=prune_ffn_units,
                prune_ffn_layer=prune_ffn_layers,
            ),
        )
        super().__init__(args)

    def build_encoder_layer(self, args, layer_idx: int = 0, **kwargs) -> nn.Module:
        plan = self._plan
        layer = PrunableEncoderLayer(
            embed_dim=args.encoder_embed_dim,
            num_heads=plan["attention_heads"][layer_idx],
            head_dim=plan["head_dim"],
            ffn_units=plan["ffn_units"][layer_idx],
            dropout=args.dropout,
            attention_dropout=args.attention_dropout,
            activation_dropout=args.activation_dropout,
            activation_fn=args.activation_fn,
            layer_norm_first=args.layer_norm_first,
            make_gate=plan["make_gate"],
            **plan["flags"],
        )
        if args.checkpoint_activations:
            layer = checkpoint_wrapper(layer)
        return layer
