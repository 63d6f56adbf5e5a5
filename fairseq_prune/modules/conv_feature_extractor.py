"""The convolutional feature extractor of wav2vec2 with a hard concrete gate per output channel.

Where each conv layer's channel gate acts (chosen so that removing a channel at export is exact):

* conv layers 0 .. L-2: the mask multiplies the block's output (after GELU), computed as a product with the
  input channels of the next conv layer's weight (the same thing, cheaper); export makes that product final.
* the last conv layer: its output goes through the model's feature LayerNorm, which normalises *across*
  channels, so the mask multiplies the LayerNorm's output (:class:`GatedFeatureLayerNorm`) and export folds it
  into the LayerNorm's affine parameters.
* every LayerNorm across channels (the feature LayerNorm, and the per-block LayerNorm of
  ``extractor_mode=layer_norm``) computes its statistics over the channels whose mask is non-zero only,
  i.e. exactly what the exported model, which no longer has the other channels, computes.

The gates of all conv layers live in ``feature_extractor.channel_gates``; fairseq's own sub-modules
(``conv_layers.{i}.{0,2,...}``) keep their names so fairseq checkpoints load unchanged.

Export (:meth:`GatedConvFeatureExtractor.pruned`, :meth:`GatedFeatureLayerNorm.pruned`) keeps the channels whose
eval-mode mask is non-zero and makes the products above final: a layer's mask is folded into the next conv's
input channels, the last layer's into the feature LayerNorm's affine parameters.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel
from torch import nn

from .hard_concrete import HardConcrete
from .kept_units import Selection, kept_units, support


def layer_norm_over(x: torch.Tensor, weight, bias, eps: float, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """LayerNorm over the last dim of ``x`` computed in float32 (as fairseq's Fp32LayerNorm), using only the
    channels in ``keep`` (a 1-D index tensor; ``None`` = all). Channels outside ``keep`` come out as 0."""
    if keep is None:
        return F.layer_norm(
            x.float(),
            x.shape[-1:],
            None if weight is None else weight.float(),
            None if bias is None else bias.float(),
            eps,
        ).type_as(x)
    out = x.new_zeros(x.shape)
    out[..., keep] = F.layer_norm(
        x[..., keep].float(),
        (keep.numel(),),
        None if weight is None else weight[keep].float(),
        None if bias is None else bias[keep].float(),
        eps,
    ).type_as(x)
    return out


class GatedConvFeatureExtractor(ConvFeatureExtractionModel):
    """fairseq's ``ConvFeatureExtractionModel`` plus optional output-channel gates.

    Args:
        conv_layers: ``(channels, kernel, stride)`` per layer, as fairseq's ``conv_feature_layers``
            (channels may differ per layer, e.g. after pruning).
        mode: fairseq's ``extractor_mode`` (``default``: GroupNorm on layer 0; ``layer_norm``: LayerNorm over
            channels in every block).
        conv_bias: fairseq's ``conv_bias``.
        gates: one :class:`HardConcrete` (or ``None``: not prunable) per conv layer, or ``None`` (no pruning
            of the CNN). Absent gates are held as ``nn.Identity`` placeholders, which have no state.

    Input ``(B, S)`` raw audio; output ``(B, C_L, T_L)``, with channels of the last layer not yet masked (see
    :class:`GatedFeatureLayerNorm`).
    """

    def __init__(
        self,
        conv_layers: List[Tuple[int, int, int]],
        mode: str = "default",
        conv_bias: bool = False,
        gates: Optional[List[HardConcrete]] = None,
    ) -> None:
        super().__init__(conv_layers=conv_layers, dropout=0.0, mode=mode, conv_bias=conv_bias)
        self.mode = mode
        self.channel_gates = (
            nn.ModuleList([g if g is not None else nn.Identity() for g in gates]) if gates is not None else None
        )

    def gate(self, i: int) -> Optional[HardConcrete]:
        g = None if self.channel_gates is None else self.channel_gates[i]
        return g if isinstance(g, HardConcrete) else None

    def channel_mask(self, i: int) -> Optional[torch.Tensor]:
        g = self.gate(i)
        return None if g is None else g.mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # B x S -> B x 1 x S
        last = len(self.conv_layers) - 1
        prev: Optional[torch.Tensor] = None  # mask of the previous layer's output channels
        for i, block in enumerate(self.conv_layers):
            mask = self.channel_mask(i)
            conv, dropout, act = block[0], block[1], block[-1]
            weight = conv.weight
            if prev is not None:
                # (h * m) conv W == h conv (W * m over input channels): the mask costs a weight-sized product
                # instead of an activation-sized one, and its gradient comes from the weight gradient
                weight = weight * prev.to(weight.dtype).view(1, -1, 1)
            x = dropout(F.conv1d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
            if self.mode == "layer_norm":
                ln = block[2][1]  # (TransposeLast, Fp32LayerNorm, TransposeLast)
                x = layer_norm_over(x.transpose(-2, -1), ln.weight, ln.bias, ln.eps, support(mask)).transpose(-2, -1)
            elif len(block) == 4:
                x = block[2](x)  # GroupNorm of layer 0 (per channel)
            x = act(x)
            prev = mask if i < last else None  # the last layer's mask is applied by GatedFeatureLayerNorm
        return x

    def kept_channels(self, round_to: int = 1) -> List[Selection]:
        """The output channels of every conv layer that export keeps (at least one per layer). ``round_to``
        rounds a layer's count up with closed channels (see :func:`~.kept_units.kept_units`), except where the
        channels feed a LayerNorm across channels (every layer in ``layer_norm`` mode, the last one always):
        extra channels would change its statistics."""
        last = len(self.conv_layers) - 1
        return [
            kept_units(
                block[0].out_channels, self.gate(i), min_one=True,
                round_to=round_to if self.mode != "layer_norm" and i < last else 1,
            )
            for i, block in enumerate(self.conv_layers)
        ]

    @torch.no_grad()
    def pruned(self, kept: List[Selection]) -> "GatedConvFeatureExtractor":
        """A copy without gates that keeps the ``kept`` channels of each layer, each layer's mask (but the last
        one's, see :meth:`GatedFeatureLayerNorm.pruned`) folded into the input channels of the next conv."""
        convs = [block[0] for block in self.conv_layers]
        layers = [(sel.size, conv.kernel_size[0], conv.stride[0]) for sel, conv in zip(kept, convs)]
        out = GatedConvFeatureExtractor(layers, mode=self.mode, conv_bias=convs[0].bias is not None)
        prev: Optional[Selection] = None
        for block, new_block, sel in zip(self.conv_layers, out.conv_layers, kept):
            state = {}
            for name, value in block.state_dict().items():  # conv (0), its norm in layer 0 or layer_norm mode (2)
                value = value[sel.index]  # every tensor of a block is per output channel (rows of the conv)
                if name == "0.weight" and prev is not None:
                    value = value[:, prev.index] * prev.scale.view(1, -1, 1)
                state[name] = value
            new_block.load_state_dict(state, strict=True)
            prev = sel
        return out


class GatedFeatureLayerNorm(nn.LayerNorm):
    """The feature LayerNorm of ``Wav2Vec2Model`` (``layer_norm``, over the last conv layer's channels),
    applying the last conv layer's channel gate to its output.

    The gate is owned by the feature extractor (``feature_extractor.channel_gates[-1]``); this module only
    holds a reference to it, so it appears once in the state dict. Input and output ``(B, T, C_L)``.
    """

    def __init__(self, channels: int, gate: Optional[HardConcrete]) -> None:
        super().__init__(channels)
        self._gate = [gate]  # a list, so that the gate is not registered here a second time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self._gate[0]
        if gate is None:
            return super().forward(x)
        mask = gate.mask()
        m = mask.to(self.weight.dtype)
        # LN(x) * m with m folded into the affine parameters (statistics over the kept channels only)
        return layer_norm_over(x, self.weight * m, self.bias * m, self.eps, support(mask))

    @torch.no_grad()
    def pruned(self, kept: Selection) -> "GatedFeatureLayerNorm":
        """A LayerNorm without gate over the ``kept`` channels of the last conv layer, their mask folded into
        its affine parameters."""
        out = GatedFeatureLayerNorm(kept.size, None)
        out.weight.copy_(self.weight[kept.index] * kept.scale)
        out.bias.copy_(self.bias[kept.index] * kept.scale)
        return out
