"""Self-attention with a per-head mask and any number of heads (including none)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .kept_units import Selection


class OutputBias(nn.Module):
    """What is left of a projection whose every input unit was pruned: its bias, broadcast over positions.

    Keeps the parameter name ``bias`` of the ``nn.Linear`` it replaces."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., 0)`` or anything with the right leading dims; returns ``(..., dim)``."""
        return x.new_zeros(*x.shape[:-1], self.bias.numel()) + self.bias


class PrunableSelfAttention(nn.Module):
    """Multi-head self-attention computing what fairseq's ``MultiheadAttention`` computes for wav2vec2
    (``self_attention=True``, no bias_kv, no zero_attn), with ``num_heads`` heads of ``head_dim`` each, so
    that ``num_heads * head_dim`` may be smaller than ``embed_dim`` after pruning.

    Sub-module names are fairseq's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). With
    ``num_heads == 0`` the projections are gone and only ``out_proj.bias`` remains.

    Args:
        embed_dim: ``encoder_embed_dim``.
        num_heads: heads kept in this layer.
        head_dim: ``encoder_embed_dim // encoder_attention_heads`` of the original model.
        dropout: ``attention_dropout`` (on the attention probabilities).
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        if num_heads > 0:
            self.q_proj = nn.Linear(embed_dim, inner)
            self.k_proj = nn.Linear(embed_dim, inner)
            self.v_proj = nn.Linear(embed_dim, inner)
            self.out_proj = nn.Linear(inner, embed_dim)
        else:
            self.q_proj = self.k_proj = self.v_proj = None
            self.out_proj = OutputBias(embed_dim)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        head_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: ``(T, B, C)``.
            key_padding_mask: ``(B, T)``, True at padded positions.
            head_mask: ``(num_heads,)`` multiplier of each head's output, or ``None``.
        Returns:
            ``(T, B, C)``.
        """
        T, B, C = x.shape
        if self.num_heads == 0:
            return self.out_proj(x)
        H, hd = self.num_heads, self.head_dim

        def heads(t: torch.Tensor) -> torch.Tensor:  # (T, B, H*hd) -> (B, H, T, hd)
            return t.view(T, B, H, hd).permute(1, 2, 0, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attn_mask = None
        # traced (ONNX), the mask is always applied: a branch on its values would be frozen into the graph
        if key_padding_mask is not None and (torch.jit.is_tracing() or bool(key_padding_mask.any())):
            attn_mask = (~key_padding_mask.bool()).view(B, 1, 1, T)
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hd)
        ctx = ctx.permute(2, 0, 1, 3).reshape(T, B, H * hd)
        if head_mask is None:
            return self.out_proj(ctx)
        # scaling each head's output == scaling its columns of out_proj (a weight-sized product)
        w = self.out_proj.weight * head_mask.to(ctx.dtype).repeat_interleave(hd)
        return F.linear(ctx, w, self.out_proj.bias)

    @torch.no_grad()
    def pruned(self, kept: Selection) -> "PrunableSelfAttention":
        """A copy with the ``kept`` heads only: their rows of ``q_proj``/``k_proj``/``v_proj``, their columns of
        ``out_proj`` scaled by each head's multiplier (what ``head_mask`` does in :meth:`forward`). No head kept:
        only ``out_proj.bias`` is left."""
        out = PrunableSelfAttention(self.embed_dim, kept.size, self.head_dim, self.dropout)
        out.out_proj.bias.copy_(self.out_proj.bias)
        if out.num_heads == 0:
            return out
        rows = (kept.index.unsqueeze(1) * self.head_dim + torch.arange(self.head_dim)).reshape(-1)
        for name in ("q_proj", "k_proj", "v_proj"):
            old, new = getattr(self, name), getattr(out, name)
            new.weight.copy_(old.weight[rows])
            new.bias.copy_(old.bias[rows])
        out.out_proj.weight.copy_(self.out_proj.weight[:, rows] * kept.scale.repeat_interleave(self.head_dim))
        return out
