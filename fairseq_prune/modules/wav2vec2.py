"""fairseq's ``Wav2Vec2Model`` with per-layer sizes and hard concrete gates over conv channels, attention
heads and FFN units (and optionally whole attention / FFN blocks)."""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.data.data_utils import compute_mask_indices
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Model
from omegaconf import open_dict
from torch import nn

from ..cost import Wav2Vec2Shape
from ..io.errors import ConfigError
from .hubert import HUBERT, family, hubert_frame_lengths
from ..layer_sizes import LayerSizes, is_gate_key, parse_conv_layers
from .conv_feature_extractor import GatedConvFeatureExtractor, GatedFeatureLayerNorm
from .encoder_layer import PrunableEncoderLayer, PrunableTransformerEncoder
from .hard_concrete import GATE_DEFAULTS, GateSettings, HardConcrete

#: gate groups, in the order used for logging and reports
GATE_GROUPS = ("conv_channels", "attention_heads", "attention_layers", "ffn_units", "ffn_layers")
#: the ``model.prune_*`` flag of each gate group
PRUNE_FLAGS = tuple(f"prune_{group}" for group in GATE_GROUPS)


@dataclass
class PruningPlan:
    """What a :class:`PrunableWav2Vec2Model` is built with, beyond fairseq's ``Wav2Vec2Config``.

    ``sizes``: per-layer sizes (empty fields: those of the config). The ``prune_*`` flags select which gate
    groups exist; ``gates`` parametrise every gate.
    """

    sizes: LayerSizes = field(default_factory=LayerSizes)
    prune_conv_channels: bool = False
    prune_attention_heads: bool = False
    prune_attention_layers: bool = False
    prune_ffn_units: bool = False
    prune_ffn_layers: bool = False
    gates: GateSettings = GATE_DEFAULTS

    def make_gate(self, n: int) -> HardConcrete:
        return self.gates.make(n)

    @property
    def any_gates(self) -> bool:
        return any(getattr(self, flag) for flag in PRUNE_FLAGS)


class PrunableWav2Vec2Model(Wav2Vec2Model):
    """fairseq's ``Wav2Vec2Model`` (fine-tuning path: ``extract_features``) built at the per-layer sizes of
    ``plan`` and with its gates. fairseq's ``forward`` runs unchanged; the gated sub-modules are

    * ``feature_extractor``: :class:`GatedConvFeatureExtractor` (gates in ``feature_extractor.channel_gates``),
    * ``layer_norm``: :class:`GatedFeatureLayerNorm` (applies the last conv layer's gate),
    * ``encoder``: :class:`PrunableTransformerEncoder`.

    State-dict keys of fairseq's modules are unchanged; gates add ``*.log_alpha`` keys only. The pre-training
    heads (quantizer, ``project_q``, ``final_proj``) are removed.

    ``cfg`` is a ``Wav2Vec2Config``; its ``_name`` is the model family (:func:`fairseq_prune.modules.hubert.family`):
    ``hubert`` (a HuBERT checkpoint mapped by :func:`fairseq_prune.modules.hubert.hubert_as_wav2vec2`) computes the frame
    padding mask by HuBERT's rule, which is all that differs from wav2vec2 on the fine-tuning path.
    """

    def __init__(self, cfg, plan: PruningPlan) -> None:
        if getattr(cfg, "quantize_input", False):
            raise ConfigError("wav2vec2 models with quantize_input=True are not supported")
        if getattr(cfg, "pos_conv_depth", 1) != 1 or getattr(cfg, "conv_pos_batch_norm", False):
            raise ConfigError("only the single weight-normed positional convolution of wav2vec2 is supported")
        full = parse_conv_layers(cfg.conv_feature_layers)
        sizes = plan.sizes.resolve(LayerSizes.dense(cfg))
        layers = [(c, k, s) for c, (_, k, s) in zip(sizes.conv_channels, full)]
        D = cfg.encoder_embed_dim
        had_proj = full[-1][0] != D
        # fairseq sizes the feature LayerNorm and projection from conv_feature_layers
        sized = copy.deepcopy(cfg)
        with open_dict(sized):
            sized.conv_feature_layers = repr(layers)
        super().__init__(sized)
        self.cfg = cfg  # keep the original spec (kernels and strides are what fairseq reads from it)
        self.family = family(cfg)
        self._num_samples = 0  # the padded length of the batch during forward (HuBERT's padding rule needs it)
        self.remove_pretraining_modules()
        self.plan = plan

        gates = None
        if plan.prune_conv_channels:
            gates = [plan.make_gate(c) for c, _, _ in layers]
            if not had_proj:
                # without post_extract_proj the last conv layer feeds the encoder directly: its width is fixed
                gates[-1] = None
        self.feature_extractor = GatedConvFeatureExtractor(
            layers, mode=cfg.extractor_mode, conv_bias=cfg.conv_bias, gates=gates
        )
        last_gate = gates[-1] if gates is not None else None
        self.layer_norm = GatedFeatureLayerNorm(self.embed, last_gate)
        if had_proj and self.post_extract_proj is None:  # pruned width happens to equal encoder_embed_dim
            self.post_extract_proj = nn.Linear(self.embed, D)

        self.encoder = PrunableTransformerEncoder(
            cfg,
            attention_heads=sizes.attention_heads,
            ffn_units=sizes.ffn_units,
            make_gate=plan.make_gate,
            prune_heads=plan.prune_attention_heads,
            prune_attention_layers=plan.prune_attention_layers,
            prune_ffn_units=plan.prune_ffn_units,
            prune_ffn_layers=plan.prune_ffn_layers,
        )

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, source, *args, **kwargs):
        """fairseq's ``Wav2Vec2Model.forward``; ``source`` ``(B, S)`` audio (``padding_mask`` ``(B, S)``, True at
        padding)."""
        for g in self.gates():
            g.clear()  # one fresh draw per gate per forward pass, shared by all its consumers
        self._num_samples = source.size(-1)
        try:
            return super().forward(source, *args, **kwargs)
        finally:
            self._num_samples = 0

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Unpadded frames per utterance, from which fairseq's forward builds the frame padding mask: wav2vec2's
        conv formula, or for the ``hubert`` family HuBERT's rule (:func:`~fairseq_prune.modules.hubert.hubert_frame_lengths`
        at the padded length of the batch in ``forward``). ``input_lengths`` ``(B,)`` samples -> ``(B,)`` frames."""
        if self.family != HUBERT:
            return super()._get_feat_extract_output_lengths(input_lengths)
        if self._num_samples <= 0:
            raise RuntimeError("HuBERT's frame padding rule needs the batch's padded length: only forward() knows it")
        num_frames = int(super()._get_feat_extract_output_lengths(torch.tensor(self._num_samples)))
        return hubert_frame_lengths(input_lengths, self._num_samples, num_frames)

    def apply_mask(self, x, padding_mask, mask_indices=None, mask_channel_indices=None):
        """fairseq's time and channel masking, with the spans drawn reproducibly.

        fairseq draws the spans with ``np.random.default_rng(None)`` (fresh OS entropy), so no two runs mask
        alike and a resumed run cannot repeat an interrupted one. Here the spans come from a seed drawn from
        torch's generator, which fairseq reseeds from ``(seed, update)`` at every training step; the spans
        themselves are computed and applied by fairseq's own code.
        """
        B, T, C = x.shape
        seed = int(torch.randint(1, 2**31 - 1, (1,)).item())
        rows = torch.arange(B)
        if mask_indices is None and self.mask_prob > 0:
            mask_indices = compute_mask_indices(
                (B, T),
                padding_mask,
                self.mask_prob,
                self.mask_length,
                self.mask_selection,
                self.mask_other,
                min_masks=2,
                no_overlap=self.no_mask_overlap,
                min_space=self.mask_min_space,
                require_same_masks=self.cfg.require_same_masks,
                mask_dropout=self.cfg.mask_dropout,
                seed=seed,
                epoch=0,
                indices=rows,
            )
            mask_indices = torch.from_numpy(mask_indices).to(x.device)
        if mask_channel_indices is None and self.mask_channel_prob > 0:
            mask_channel_indices = compute_mask_indices(
                (B, C),
                None,
                self.mask_channel_prob,
                self.mask_channel_length,
                self.mask_channel_selection,
                self.mask_channel_other,
                no_overlap=self.no_mask_channel_overlap,
                min_space=self.mask_channel_min_space,
                seed=seed + 1,
                epoch=0,
                indices=rows,
            )
            mask_channel_indices = torch.from_numpy(mask_channel_indices).to(x.device).unsqueeze(1).expand(-1, T, -1)
        return super().apply_mask(x, padding_mask, mask_indices, mask_channel_indices)

    def constrain_gates_(self) -> None:
        """Keep every gate's ``log_alpha`` within its limit (the audio_pruning task calls this after each
        optimizer step: projected gradient descent)."""
        for g in self.gates():
            g.constrain_()

    # ------------------------------------------------------------------------------------------ inspection
    def conv_gates(self) -> List[Optional[HardConcrete]]:
        fe = self.feature_extractor
        return [fe.gate(i) for i in range(len(fe.conv_layers))]

    def encoder_layers(self) -> List[PrunableEncoderLayer]:
        return [getattr(layer, "_checkpoint_wrapped_module", layer) for layer in self.encoder.layers]

    def gates(self) -> List[HardConcrete]:
        return [m for m in self.modules() if isinstance(m, HardConcrete)]

    def gates_by_group(self) -> Dict[str, List[HardConcrete]]:
        layers = self.encoder_layers()
        found = {
            "conv_channels": self.conv_gates(),
            "attention_heads": [l.head_gate for l in layers],
            "attention_layers": [l.attn_layer_gate for l in layers],
            "ffn_units": [l.ffn_unit_gate for l in layers],
            "ffn_layers": [l.ffn_layer_gate for l in layers],
        }
        return {k: [g for g in v if g is not None] for k, v in found.items() if any(g is not None for g in v)}

    def layer_sizes(self) -> LayerSizes:
        """The model's current per-layer sizes (as built: gates do not change them)."""
        layers = self.encoder_layers()
        return LayerSizes(
            conv_channels=[block[0].out_channels for block in self.feature_extractor.conv_layers],
            attention_heads=[l.self_attn.num_heads for l in layers],
            ffn_units=[l.ffn_units for l in layers],
        )

    def shape(self, vocab_size: int = 0) -> Wav2Vec2Shape:
        """The model's architecture (its current per-layer sizes) for the cost module."""
        return Wav2Vec2Shape.from_w2v_cfg(self.cfg, self.layer_sizes(), vocab_size=vocab_size)

    def structure_counts(self, mode: str) -> LayerSizes:
        """Units kept per structure under the gates.

        ``mode="expected"``: differentiable expectations, P(z > 0) summed over a structure's units and
        multiplied by its block gate's P(z > 0). ``mode="deterministic"``: integer counts of the units whose
        eval-mode mask is non-zero (what export keeps). ``mode="minimum"``: the smallest sizes the gates allow
        (every gated unit closed; a conv layer keeps one channel). Ungated structures count at full size.
        """
        if mode not in ("expected", "deterministic", "minimum"):
            raise ValueError(f"mode must be 'expected', 'deterministic' or 'minimum', not {mode!r}")

        def kept(gate: Optional[HardConcrete], full: int):
            if gate is None:
                return full
            if mode == "expected":
                return gate.prob_nonzero().sum()
            if mode == "minimum":
                return 0
            return int((gate.deterministic() > 0).sum())

        def block(unit_gate, layer_gate, full):
            n = kept(unit_gate, full)
            return n if layer_gate is None else n * kept(layer_gate, 1)

        conv = [
            kept(g, block[0].out_channels)
            for g, block in zip(self.conv_gates(), self.feature_extractor.conv_layers)
        ]
        if mode != "expected":  # a conv layer always keeps a channel (see conv_feature_extractor.support)
            conv = [max(1, c) for c in conv]
        layers = self.encoder_layers()
        heads = [block(l.head_gate, l.attn_layer_gate, l.self_attn.num_heads) for l in layers]
        ffn = [block(l.ffn_unit_gate, l.ffn_layer_gate, l.ffn_units) for l in layers]
        return LayerSizes(conv_channels=conv, attention_heads=heads, ffn_units=ffn)

    # ---------------------------------------------------------------------------------------------- export
    @torch.no_grad()
    def pruned(self, round_to: int = 1) -> "PrunableWav2Vec2Model":
        """A model without gates, at the sizes the gates keep, computing what this model computes in eval mode:
        each gated module folds its gates into a smaller copy of itself (see their ``pruned`` methods), the
        feature projection keeps the input columns of the last conv layer's kept channels, the rest is copied.
        ``round_to``: conv channels and FFN units in multiples of it where that leaves the outputs unchanged
        (:meth:`GatedConvFeatureExtractor.kept_channels`)."""
        channels = self.feature_extractor.kept_channels(round_to)
        replaced = {
            self.feature_extractor: self.feature_extractor.pruned(channels),
            self.layer_norm: self.layer_norm.pruned(channels[-1]),
            **{layer: layer.pruned(round_to) for layer in self.encoder_layers()},
        }
        if self.post_extract_proj is not None:
            proj = nn.Linear(channels[-1].size, self.post_extract_proj.out_features)
            proj.weight.copy_(self.post_extract_proj.weight[:, channels[-1].index])
            proj.bias.copy_(self.post_extract_proj.bias)
            replaced[self.post_extract_proj] = proj
        layers = [replaced[layer] for layer in self.encoder_layers()]
        sizes = LayerSizes(
            conv_channels=[sel.size for sel in channels],
            attention_heads=[layer.self_attn.num_heads for layer in layers],
            ffn_units=[layer.ffn_units for layer in layers],
        )
        out = PrunableWav2Vec2Model(self.cfg, PruningPlan(sizes=sizes))
        out.load_state_dict(self._state_with(replaced), strict=True)
        return out

    def _state_with(self, replaced: Dict[nn.Module, nn.Module]) -> Dict[str, torch.Tensor]:
        """This model's state dict without gates, each sub-module in ``replaced`` contributing its replacement's
        entries instead of its own."""
        names = {module: name for name, module in self.named_modules()}
        state = {k: v for k, v in self.state_dict().items() if not is_gate_key(k)}
        for old, new in replaced.items():
            prefix = names[old] + "."
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            state.update({prefix + k: v for k, v in new.state_dict().items()})
        return state
