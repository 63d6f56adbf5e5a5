"""Parameter and multiply-accumulate (MAC) accounting for wav2vec2 CTC models, dense or pruned.

This is the only place where costs are defined. The same formulas give

* exact counts, when the per-structure sizes are integers (an architecture, or the units a deterministic
  mask keeps), and
* expected, differentiable counts, when the sizes are expectations under the hard concrete gates
  (tensors): a coupled structure costs by the product of its gates' expectations, e.g. conv layer ``l``
  costs ``E[in_l] * E[out_l] * k_l * T_l`` MACs.

MACs count the matrix products and convolutions (what ``torch.utils.flop_counter`` counts, divided by two)
plus the two attention products ``Q K^T`` and ``A V``, which the flop counter misses for CPU
scaled-dot-product attention. Normalisations, activations and softmax are not counted. Parameters are the
tensors the model stores (the weight-normed positional convolution stores ``weight_v`` and ``weight_g``),
gates excluded.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .layer_sizes import LayerSizes, Number, parse_conv_layers

#: 10 s of 16 kHz audio: the default reference input for MAC budgets and reports.
REFERENCE_SAMPLES = 160_000


@dataclass(frozen=True)
class Wav2Vec2Shape:
    """The sizes of a wav2vec2 CTC model that its cost depends on.

    Mirrors fairseq's ``Wav2Vec2Config``: ``conv_*`` come from ``conv_feature_layers``, ``extractor_mode``/
    ``conv_bias`` as in fairseq, ``embed_dim`` is ``encoder_embed_dim``, ``pos_conv_*`` are ``conv_pos``/
    ``conv_pos_groups``, ``head_dim`` is ``encoder_embed_dim // encoder_attention_heads`` of the original model,
    ``sizes`` the per-layer conv channels, attention heads and FFN units (possibly pruned; 0 heads or units: only
    the block's output bias is left), ``vocab_size`` the CTC output size (0: no output projection),
    ``seq_len_multiple`` is ``required_seq_len_multiple``.
    """

    sizes: LayerSizes
    conv_kernels: Tuple[int, ...]
    conv_strides: Tuple[int, ...]
    conv_bias: bool
    extractor_mode: str
    embed_dim: int
    feature_proj: bool
    pos_conv_kernel: int
    pos_conv_groups: int
    head_dim: int
    vocab_size: int = 0
    seq_len_multiple: int = 1

    @classmethod
    def from_w2v_cfg(cls, w2v_cfg, sizes: Optional[LayerSizes] = None, vocab_size: int = 0) -> "Wav2Vec2Shape":
        """Shape of a fairseq ``Wav2Vec2Config`` (``w2v_args.model``), optionally at pruned ``sizes`` (empty
        fields: the dense sizes)."""
        layers = parse_conv_layers(w2v_cfg.conv_feature_layers)
        D = w2v_cfg.encoder_embed_dim
        return cls(
            sizes=(sizes or LayerSizes()).resolve(LayerSizes.dense(w2v_cfg)),
            conv_kernels=tuple(k for _, k, _ in layers),
            conv_strides=tuple(s for _, _, s in layers),
            conv_bias=bool(w2v_cfg.conv_bias),
            extractor_mode=str(w2v_cfg.extractor_mode),
            embed_dim=D,
            feature_proj=layers[-1][0] != D,
            pos_conv_kernel=w2v_cfg.conv_pos,
            pos_conv_groups=w2v_cfg.conv_pos_groups,
            head_dim=D // w2v_cfg.encoder_attention_heads,
            vocab_size=vocab_size,
            seq_len_multiple=getattr(w2v_cfg, "required_seq_len_multiple", 1) or 1,
        )

    def conv_frames(self, num_samples: int) -> List[int]:
        """Output length of every conv layer for ``num_samples`` input samples (fairseq's formula)."""
        frames, t = [], num_samples
        for k, s in zip(self.conv_kernels, self.conv_strides):
            t = (t - k) // s + 1
            if t <= 0:
                raise ValueError(f"{num_samples} samples are too short for the conv feature extractor")
            frames.append(t)
        return frames


@dataclass
class Cost:
    params: Number = 0
    macs: Number = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)


def cost_breakdown(
    shape: Wav2Vec2Shape, num_samples: int = REFERENCE_SAMPLES, counts: Optional[LayerSizes] = None
) -> Dict[str, Cost]:
    """Cost per component for one utterance of ``num_samples`` samples, at the sizes of ``shape`` or at
    ``counts`` (e.g. the expected sizes under the gates).

    Components: ``conv.{i}`` (conv weights, bias, and the norm of the block), ``feature_norm``,
    ``feature_proj``, ``mask_emb``, ``pos_conv``, ``encoder_norm``, and per Transformer layer
    ``layers.{l}.attention`` (q, k, v, out projections), ``layers.{l}.attention_products`` (QK^T and AV),
    ``layers.{l}.ffn``, ``layers.{l}.norms``; ``ctc_proj`` when ``vocab_size > 0``.
    """
    counts = counts or shape.sizes
    D, hd = shape.embed_dim, shape.head_dim
    frames = shape.conv_frames(num_samples)
    out: Dict[str, Cost] = {}

    c_in: Number = 1
    for i, (k, t) in enumerate(zip(shape.conv_kernels, frames)):
        c = counts.conv_channels[i]
        has_norm = shape.extractor_mode == "layer_norm" or i == 0  # GroupNorm on layer 0 in "default" mode
        params = c_in * c * k + (c if shape.conv_bias else 0) + (2 * c if has_norm else 0)
        out[f"conv.{i}"] = Cost(params, c_in * c * k * t)
        c_in = c

    t = frames[-1]
    out["feature_norm"] = Cost(2 * c_in, 0)
    if shape.feature_proj:
        out["feature_proj"] = Cost(c_in * D + D, t * c_in * D)
    out["mask_emb"] = Cost(D, 0)

    k, g = shape.pos_conv_kernel, shape.pos_conv_groups
    pos_frames = t + 2 * (k // 2) - k + 1  # before SamePad trims the extra frame of an even kernel
    out["pos_conv"] = Cost(D * (D // g) * k + k + D, pos_frames * D * (D // g) * k)
    out["encoder_norm"] = Cost(2 * D, 0)

    m = shape.seq_len_multiple
    te = int(math.ceil(t / m) * m)  # fairseq pads the encoder input to a multiple of this
    for layer, (h, u) in enumerate(zip(counts.attention_heads, counts.ffn_units)):
        out[f"layers.{layer}.attention"] = Cost(4 * D * hd * h + 3 * hd * h + D, 4 * te * D * hd * h)
        out[f"layers.{layer}.attention_products"] = Cost(0, 2 * te * te * hd * h)
        out[f"layers.{layer}.ffn"] = Cost(2 * D * u + u + D, 2 * te * D * u)
        out[f"layers.{layer}.norms"] = Cost(4 * D, 0)

    if shape.vocab_size:
        out["ctc_proj"] = Cost(D * shape.vocab_size + shape.vocab_size, t * D * shape.vocab_size)
    return out


def is_cnn(component: str) -> bool:
    return component.startswith("conv.")


def totals(breakdown: Dict[str, Cost]) -> Dict[str, Cost]:
    """``{"cnn": ..., "transformer": ..., "total": ...}``: the CNN is the 7 conv blocks, the Transformer
    everything after them (feature norm and projection included)."""
    cnn, rest = Cost(), Cost()
    for name, c in breakdown.items():
        if is_cnn(name):
            cnn = cnn + c
        else:
            rest = rest + c
    return {"cnn": cnn, "transformer": rest, "total": cnn + rest}


def group_breakdown(breakdown: Dict[str, Cost]) -> Dict[str, Cost]:
    """Sum components into report groups: ``cnn``, ``feature_proj`` (norm, projection, mask embedding),
    ``pos_conv``, ``attention``, ``attention_products``, ``ffn``, ``norms``, ``ctc_proj``."""
    groups: Dict[str, Cost] = {}
    for name, c in breakdown.items():
        if is_cnn(name):
            key = "cnn"
        elif name in ("feature_norm", "feature_proj", "mask_emb"):
            key = "feature_proj"
        elif name.startswith("layers."):
            key = name.split(".", 2)[2]
        elif name == "encoder_norm":
            key = "norms"
        else:
            key = name
        groups[key] = groups.get(key, Cost()) + c
    return groups

