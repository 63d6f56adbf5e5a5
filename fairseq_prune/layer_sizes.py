"""The per-layer architecture of a (pruned) wav2vec2 model: one name per size, everywhere.

:class:`LayerSizes` holds the output channels of every conv layer (``conv_channels``), the attention heads and
the FFN intermediate units of every Transformer layer (``attention_heads``, ``ffn_units``). These are the field
names of ``model.*`` in ``wav2vec2_ctc_pruning``'s config (what an exported checkpoint stores), the keys of the
export summary, and the fields of the cost module's counts.

In a config an empty list means "the size of the dense architecture" (``w2v_args.model``): :meth:`LayerSizes.resolve`
is the one place that rule is applied, against :meth:`LayerSizes.dense`.
"""
import ast
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Tuple, Union

import torch
from omegaconf import open_dict

from .io.errors import ConfigError

#: a size: an int, or (for expected sizes under the gates) a differentiable tensor
Number = Union[int, float, torch.Tensor]


def is_gate_key(key: str) -> bool:
    """Whether a state-dict key is a gate's parameter (``...log_alpha``): what export drops and what a dense
    checkpoint does not have."""
    return key.endswith("log_alpha")


def parse_conv_layers(spec: str) -> List[Tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string, e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``,
    without ``eval``: only list/tuple literals of integers, ``+`` and ``*`` are accepted."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"cannot parse conv_feature_layers {spec!r}: {e}") from None
    if not isinstance(layers, list) or not all(
        isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers
    ):
        raise ValueError(f"conv_feature_layers must be a list of (dim, kernel, stride) tuples, got {spec!r}")
    return layers


def receptive_field(layers: List[Tuple[int, int, int]]) -> int:
    """The audio samples one output frame of fairseq's conv feature extractor sees, for ``(dim, kernel, stride)``
    per layer (:func:`parse_conv_layers`): 1 + the sum over layers of (kernel - 1) x the strides before it; 400
    for wav2vec2's ``[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2``. Shorter audio gives no frame: the
    convolutions fail on it, or, padded in a batch, it is decoded from padding."""
    samples, jump = 1, 1
    for _, kernel, stride in layers:
        samples += (kernel - 1) * jump
        jump *= stride
    return samples


@dataclass(frozen=True)
class LayerSizes:
    """Units per prunable structure, per layer.

    Attributes:
        conv_channels: output channels of each conv layer (``model.conv_channels``).
        attention_heads: heads of each Transformer layer, 0 = no attention left (``model.attention_heads``).
        ffn_units: FFN intermediate units of each Transformer layer, 0 = no FFN left (``model.ffn_units``).

    Entries are ints for an architecture, or tensors for the expected sizes under the gates (see
    ``PrunableWav2Vec2Model.structure_counts``). Read from a config, a field may be empty: the dense size.
    """

    conv_channels: Tuple[Number, ...] = ()
    attention_heads: Tuple[Number, ...] = ()
    ffn_units: Tuple[Number, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The field names, which are also the config fields and the export summary's keys."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def dense(cls, w2v_cfg) -> "LayerSizes":
        """The sizes of a fairseq ``Wav2Vec2Config`` (``w2v_args.model``): ``conv_feature_layers``' channels,
        ``encoder_attention_heads`` and ``encoder_ffn_embed_dim`` in each of the ``encoder_layers``."""
        n = w2v_cfg.encoder_layers
        return cls(
            conv_channels=[c for c, _, _ in parse_conv_layers(w2v_cfg.conv_feature_layers)],
            attention_heads=[w2v_cfg.encoder_attention_heads] * n,
            ffn_units=[w2v_cfg.encoder_ffn_embed_dim] * n,
        )

    @classmethod
    def from_cfg(cls, model_cfg) -> "LayerSizes":
        """The sizes a ``wav2vec2_ctc_pruning`` config (``cfg.model``) sets; missing or empty: ``()``."""
        return cls(*([int(n) for n in (getattr(model_cfg, name, None) or [])] for name in cls.names()))

    def write_cfg(self, model_cfg) -> None:
        """Set the ``model.conv_channels`` / ``attention_heads`` / ``ffn_units`` fields of ``model_cfg``."""
        with open_dict(model_cfg):
            for name, sizes in self.as_dict().items():
                model_cfg[name] = sizes

    def as_dict(self, skip_empty: bool = False) -> Dict[str, List[Any]]:
        """``{field name: list of sizes}``; with ``skip_empty``, only the fields that are set."""
        return {name: list(getattr(self, name)) for name in self.names() if getattr(self, name) or not skip_empty}

    def resolve(self, dense: "LayerSizes") -> "LayerSizes":
        """These sizes with every empty field replaced by ``dense``'s, checked against the dense layer counts:
        a :class:`~fairseq_prune.io.errors.ConfigError` naming the ``model.`` field otherwise."""
        out = LayerSizes(*(getattr(self, name) or getattr(dense, name) for name in self.names()))
        for name in self.names():
            given, n = getattr(out, name), len(getattr(dense, name))
            smallest = 1 if name == "conv_channels" else 0
            if len(given) != n or any(int(v) < smallest for v in given):
                what = "a positive size" if smallest else "a size >= 0"
                raise ConfigError(f"model.{name}={list(given)} must give {what} to each of {n} layers")
        return out

