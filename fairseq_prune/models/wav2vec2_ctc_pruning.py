"""``wav2vec2_ctc_pruning``: fairseq's ``wav2vec_ctc`` with a prunable, gated wav2vec2 encoder."""
import copy
import logging
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Any, Dict, List

from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import FairseqEncoder, register_model
from fairseq.models.wav2vec.wav2vec2_asr import Linear, Wav2Vec2CtcConfig, Wav2VecCtc, Wav2VecEncoder
from omegaconf import DictConfig, open_dict
from torch import nn

from ..io.checkpoints import CheckpointError, load_w2v_source
from ..cost import Wav2Vec2Shape
from ..io.errors import ConfigError, one_line_errors
from ..layer_sizes import LayerSizes, is_gate_key
from ..modules.hard_concrete import GATE_DEFAULTS, GateSettings
from ..modules.wav2vec2 import PRUNE_FLAGS, PrunableWav2Vec2Model, PruningPlan

logger = logging.getLogger(__name__)

# state-dict entries of a pre-training checkpoint that a fine-tuning model does not have
_PRETRAINING_ONLY = ("quantizer.", "project_q.", "final_proj.", "target_glu.", "input_quantizer.", "project_inp.")
_DROPPED_KEYS = ("_ema", "target_proj", "decoder")


@dataclass
class Wav2Vec2CtcPruningConfig(Wav2Vec2CtcConfig):
    prune_conv_channels: bool = field(
        default=False, metadata={"help": "learn a hard concrete gate per output channel of every conv layer"}
    )
    prune_attention_heads: bool = field(
        default=False, metadata={"help": "learn a hard concrete gate per attention head"}
    )
    prune_attention_layers: bool = field(
        default=False, metadata={"help": "learn one gate per layer over the whole attention block"}
    )
    prune_ffn_units: bool = field(
        default=False, metadata={"help": "learn a hard concrete gate per FFN intermediate unit"}
    )
    prune_ffn_layers: bool = field(
        default=False, metadata={"help": "learn one gate per layer over the whole FFN block"}
    )
    conv_channels: List[int] = field(
        default_factory=list,
        metadata={"help": "output channels per conv layer; empty: those of the wav2vec2 config (w2v_args)"},
    )
    attention_heads: List[int] = field(
        default_factory=list,
        metadata={"help": "attention heads per Transformer layer (0: no attention); empty: from w2v_args"},
    )
    ffn_units: List[int] = field(
        default_factory=list,
        metadata={"help": "FFN intermediate units per Transformer layer (0: no FFN); empty: from w2v_args"},
    )
    gate_temperature: float = field(
        default=GATE_DEFAULTS.temperature, metadata={"help": "temperature (beta) of the hard concrete distribution"}
    )
    gate_limit_l: float = field(
        default=GATE_DEFAULTS.limit_l, metadata={"help": "left end of the hard concrete stretch"}
    )
    gate_limit_r: float = field(
        default=GATE_DEFAULTS.limit_r, metadata={"help": "right end of the hard concrete stretch"}
    )
    gate_init_log_alpha: float = field(
        default=GATE_DEFAULTS.init_log_alpha,
        metadata={"help": "initial log alpha of every gate (3.0: eval masks all open, most draws exactly 1)"},
    )
    gate_log_alpha_limit: float = field(
        default=GATE_DEFAULTS.log_alpha_limit,
        metadata={"help": "after each update, log alpha is clamped to [-limit, limit] (0: never); needs the "
                  "audio_pruning task, which applies it"},
    )


def plan_from_cfg(cfg: Wav2Vec2CtcPruningConfig) -> PruningPlan:
    """The per-layer sizes, gate groups and gate settings a config asks for."""
    return PruningPlan(
        sizes=LayerSizes.from_cfg(cfg),
        gates=GateSettings.from_cfg(cfg),
        **{flag: bool(getattr(cfg, flag)) for flag in PRUNE_FLAGS},
    )


def compact_cfg(model_cfg: DictConfig, sizes: LayerSizes) -> DictConfig:
    """A copy of ``model_cfg`` (``cfg.model``) describing the model at ``sizes`` without gates: what an
    exported checkpoint stores."""
    out = copy.deepcopy(model_cfg)
    with open_dict(out):
        for flag in PRUNE_FLAGS:
            out[flag] = False
    sizes.write_cfg(out)
    return out


def w2v_overrides(cfg: Wav2Vec2CtcPruningConfig) -> Dict[str, Any]:
    """The fine-tuning options that replace those stored in the pre-training config, as in fairseq's
    ``Wav2VecEncoder``."""
    return {
        "dropout": cfg.dropout,
        "activation_dropout": cfg.activation_dropout,
        "dropout_input": cfg.dropout_input,
        "attention_dropout": cfg.attention_dropout,
        "mask_length": cfg.mask_length,
        "mask_prob": cfg.mask_prob,
        "require_same_masks": cfg.require_same_masks,
        "pct_holes": cfg.mask_dropout,
        "mask_selection": cfg.mask_selection,
        "mask_other": cfg.mask_other,
        "no_mask_overlap": cfg.no_mask_overlap,
        "mask_channel_length": cfg.mask_channel_length,
        "mask_channel_prob": cfg.mask_channel_prob,
        "mask_channel_before": cfg.mask_channel_before,
        "mask_channel_selection": cfg.mask_channel_selection,
        "mask_channel_other": cfg.mask_channel_other,
        "no_mask_channel_overlap": cfg.no_mask_channel_overlap,
        "encoder_layerdrop": cfg.layerdrop,
        "feature_grad_mult": cfg.feature_grad_mult,
        "checkpoint_activations": cfg.checkpoint_activations,
        "offload_activations": cfg.offload_activations,
        "min_params_to_wrap": cfg.min_params_to_wrap,
    }


class PrunableWav2VecEncoder(Wav2VecEncoder):
    """fairseq's ``Wav2VecEncoder`` (same forward, ``w2v_model`` and ``proj`` sub-modules) around a
    :class:`PrunableWav2Vec2Model`. Reads ``model.w2v_path`` itself so that it can accept pre-training and
    fine-tuned CTC checkpoints and report what is wrong with any other."""

    def __init__(self, cfg: Wav2Vec2CtcPruningConfig, output_size: int) -> None:
        FairseqEncoder.__init__(self, None)  # fairseq's __init__ would build and load a plain Wav2Vec2Model
        self.apply_mask = cfg.apply_mask
        self.is_d2v_multi = False

        source = None
        if cfg.w2v_args is None:
            source = load_w2v_source(cfg.w2v_path, w2v_overrides(cfg))
            w2v_args = source.w2v_args
            with open_dict(cfg):
                cfg.w2v_args = w2v_args
        else:
            w2v_args = cfg.w2v_args
            if isinstance(w2v_args, Namespace):
                w2v_args = convert_namespace_to_omegaconf(w2v_args)
                with open_dict(cfg):
                    cfg.w2v_args = w2v_args

        pretrained_normalize = w2v_args.task.get("normalize", w2v_args.model.get("normalize", False))
        if cfg.normalize != pretrained_normalize:
            raise ConfigError(
                f"task.normalize={cfg.normalize} but the wav2vec2 model was pre-trained with "
                f"normalize={pretrained_normalize}; set task.normalize to match"
            )
        if source is not None and source.sizes is not None:
            self._adopt_exported_sizes(cfg, source)
        plan = plan_from_cfg(cfg)
        if plan.prune_conv_channels and w2v_args.model.feature_grad_mult <= 0:
            raise ConfigError(
                "model.prune_conv_channels=true needs gradients in the CNN, but model.feature_grad_mult="
                f"{w2v_args.model.feature_grad_mult} runs it under torch.no_grad(); set model.feature_grad_mult "
                "to a value > 0 (e.g. 1.0)"
            )

        model = PrunableWav2Vec2Model(w2v_args.model, plan)
        if source is not None and not cfg.no_pretrained_weights:
            self._load_w2v_weights(model, source.model_state, source.path)

        self.w2v_model = model
        self.final_dropout = nn.Dropout(cfg.final_dropout)
        self.freeze_finetune_updates = cfg.freeze_finetune_updates
        self.num_updates = 0
        d = w2v_args.model.encoder_embed_dim
        self.proj = Linear(d, output_size) if output_size is not None else None
        if source is not None and source.proj_state is not None and not cfg.no_pretrained_weights:
            rows = source.proj_state["weight"].shape[0]
            if self.proj is None or rows != output_size:
                raise CheckpointError(
                    f"{source.path}: its CTC output layer has {rows} outputs but the task's target dictionary "
                    f"has {output_size} symbols; use the dictionary the model was fine-tuned with"
                )
            self.proj.load_state_dict(source.proj_state)

    @staticmethod
    def _adopt_exported_sizes(cfg: Wav2Vec2CtcPruningConfig, source) -> None:
        """``model.w2v_path`` is an exported (pruned) model: fine-tune it as it is, i.e. build the per-layer
        sizes it was exported with (written into ``cfg``, so this run's checkpoints are compact models too)."""
        if plan_from_cfg(cfg).any_gates:
            raise CheckpointError(
                f"{source.path}: an exported (pruned) model cannot be pruned again (this run sets model.prune_* "
                "options); fine-tune it without gates (e.g. the dense recipe), or prune the dense model it came from"
            )
        given = LayerSizes.from_cfg(cfg).as_dict()
        exported = source.sizes.as_dict(skip_empty=True)
        for key, sizes in exported.items():
            if given[key] and given[key] != sizes:
                raise CheckpointError(
                    f"{source.path}: exported with model.{key}={sizes}, but this run sets model.{key}={given[key]}; "
                    "leave it empty to fine-tune the exported model"
                )
        LayerSizes(**{**given, **exported}).write_cfg(cfg)

    @staticmethod
    def _load_w2v_weights(model: PrunableWav2Vec2Model, state: Dict[str, Any], path: str) -> None:
        state = {k: v for k, v in state.items() if k not in _DROPPED_KEYS}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: weights do not fit the model built from its config and the per-layer sizes "
                f"(model.conv_channels / attention_heads / ffn_units): {e}"
            ) from e
        missing = [k for k in missing if not is_gate_key(k)]
        unexpected = [k for k in unexpected if not k.startswith(_PRETRAINING_ONLY)]
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights do not match the wav2vec2 model; missing {missing[:5]}, unexpected {unexpected[:5]}"
            )


@register_model("wav2vec2_ctc_pruning", dataclass=Wav2Vec2CtcPruningConfig)
class Wav2Vec2CtcPruning(Wav2VecCtc):
    """CTC model with a prunable wav2vec2 encoder: fairseq's ``wav2vec_ctc`` (same state-dict keys,
    ``get_logits``, ``get_normalized_probs``) plus gates, per-layer sizes and cost inspection."""

    @classmethod
    def build_model(cls, cfg: Wav2Vec2CtcPruningConfig, task):
        with one_line_errors():
            return cls(cfg, PrunableWav2VecEncoder(cfg, len(task.target_dictionary)))

    @property
    def w2v_model(self) -> PrunableWav2Vec2Model:
        return self.w2v_encoder.w2v_model

    def shape(self) -> Wav2Vec2Shape:
        proj = self.w2v_encoder.proj
        return self.w2v_model.shape(vocab_size=proj.out_features if proj is not None else 0)

    def pruned(self, round_to: int = 1) -> "Wav2Vec2CtcPruning":
        """A copy without gates computing what this model computes in eval mode
        (:meth:`PrunableWav2Vec2Model.pruned`), its config (``cfg``) at the kept sizes with every ``prune_*``
        flag off."""
        w2v = self.w2v_model.pruned(round_to)
        out = copy.deepcopy(self, memo={id(self.w2v_model): w2v})  # the rest: the CTC output layer
        out.cfg = compact_cfg(self.cfg, w2v.layer_sizes())
        return out

    @classmethod
    def from_w2v_args(cls, w2v_args, vocab_size: int, **fields) -> "Wav2Vec2CtcPruning":
        """Build (randomly initialised, no checkpoint or data folder needed) from a wav2vec2 pre-training
        config, e.g. :func:`experiments.checkpoints.wav2vec2_pretraining_cfg` (or a HuBERT one mapped by
        :func:`fairseq_prune.modules.hubert.hubert_as_wav2vec2`); ``fields`` set
        :class:`Wav2Vec2CtcPruningConfig` fields (gates, per-layer sizes, ...). For benchmarks and tools."""
        from fairseq.dataclass.configs import FairseqConfig
        from omegaconf import OmegaConf

        root = OmegaConf.structured(FairseqConfig())
        with open_dict(root):
            root.task = OmegaConf.create({"_name": "audio_pruning", "normalize": bool(w2v_args.task.normalize),
                                          "data": ""})
            fields.setdefault("w2v_path", "")  # not read: w2v_args is given
            root.model = OmegaConf.structured(Wav2Vec2CtcPruningConfig(w2v_args=w2v_args, **fields))
            root.model._name = "wav2vec2_ctc_pruning"
        return cls(root.model, PrunableWav2VecEncoder(root.model, vocab_size))
