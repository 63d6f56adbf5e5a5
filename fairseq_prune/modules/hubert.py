"""fairseq's HuBERT checkpoints (``hubert``, ``hubert_ctc``) as ``model.w2v_path``: the adapter to the gated model.

For CTC fine-tuning fairseq runs HuBERT as ``HubertEncoder`` -> ``HubertModel.extract_features(features_only)``:
``feature_extractor`` -> ``layer_norm`` -> ``post_extract_proj`` -> ``dropout_input`` -> (mask with ``mask_emb``)
-> ``encoder``, built from the same fairseq classes (``ConvFeatureExtractionModel``, ``LayerNorm``, ``Linear``,
wav2vec2's ``TransformerEncoder``) under the same state-dict keys as ``Wav2Vec2Model``'s fine-tuning path. So a
HuBERT checkpoint becomes a wav2vec2 source here, and everything downstream (gates, costs, export, decoding) is the
wav2vec2 code. What the adapter does about the differences:

* config: ``w2v_args.model`` becomes a ``Wav2Vec2Config`` (HuBERT's fields copied; the fields HuBERT lacks at
  wav2vec2's defaults, which are what HuBERT's forward does: no quantizers, ``crop_seq_to_multiple=1``,
  ``pos_conv_depth=1``, channel masks after time masks) whose ``_name`` stays ``hubert``: the *family*, which the
  gated model, export and reports read (:func:`family`);
* frame padding mask: wav2vec2 derives it from the conv formula on the unpadded lengths, HuBERT
  (``forward_padding_mask``) marks a frame as padding when all of its ``num_samples // num_frames`` samples are:
  :func:`hubert_frame_lengths`, used by the gated model for the ``hubert`` family;
* weights: the pre-training-only ``final_proj``, ``label_embs_concat`` and ``target_glu`` are dropped;
* ``conv_pos_batch_norm=true`` (a batch-normed positional convolution) is refused: the gates cover fairseq's
  weight-normed one only.

fairseq's ``HubertCtc.get_logits`` means to set padded frames to blank, but its indexing writes into a copy, so it
returns them unchanged; the gated model (a ``wav2vec_ctc``) sets them as wav2vec2 does. Only padded frames differ.
"""
import argparse
import dataclasses
from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ..io.checkpoints import register_family, save_atomic
from ..io.errors import CheckpointError

WAV2VEC2 = "wav2vec2"
HUBERT = "hubert"
#: the ``_name`` of a pre-training config (``w2v_args.model``) that ``model.w2v_path`` accepts
FAMILIES = (WAV2VEC2, HUBERT)
#: HubertModel's pre-training-only weights (not used by CTC fine-tuning)
HUBERT_PRETRAINING_ONLY = ("final_proj.", "label_embs_concat", "target_glu.")

#: ``HubertConfig`` fields of fairseq's HuBERT pre-training configs (examples/hubert/config/pretrain); the rest
#: are ``HubertConfig``'s defaults, which are HuBERT-base's
HUBERT_BASE: Dict[str, Any] = dict(final_dim=256, untie_final_proj=True)
HUBERT_LARGE: Dict[str, Any] = dict(
    encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
    final_dim=768, extractor_mode="layer_norm", layer_norm_first=True, untie_final_proj=True,
)
#: ``task.normalize`` of those configs (HuBERT-large's layer_norm extractor is trained on normalised audio)
NORMALIZE = {"base": False, "large": True}


def family(w2v_model_cfg) -> str:
    """The model family of a pre-training config (``w2v_args.model``): ``wav2vec2`` or ``hubert``."""
    name = w2v_model_cfg.get("_name", None) if isinstance(w2v_model_cfg, (dict, DictConfig)) else None
    return str(name or WAV2VEC2)


def _defaults(dc) -> Dict[str, Any]:
    """A dataclass's field defaults, as plain values (interpolations such as ``II("task.label_rate")`` left out)."""
    out = {}
    for f in dataclasses.fields(dc):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value is not dataclasses.MISSING and not (isinstance(value, str) and value.startswith("${")):
            out[f.name] = value
    return out


def hubert_as_wav2vec2(path: str, w2v_args: DictConfig, arg_overrides: Optional[Dict[str, Any]]) -> DictConfig:
    """``w2v_args`` of a HuBERT pre-training run (or one this function already mapped) with its ``model`` as a
    ``Wav2Vec2Config`` that makes fairseq's ``Wav2Vec2Model`` compute what ``HubertModel`` computes; ``_name``
    stays ``hubert``. Keys missing from an old checkpoint take ``HubertConfig``'s defaults, as fairseq's
    ``build_model`` gives them; ``arg_overrides`` (the fine-tuning options of ``w2v_overrides``) then replace the
    wav2vec2 fields they name, as for a wav2vec2 checkpoint."""
    from fairseq.dataclass.utils import overwrite_args_by_name
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

    source = OmegaConf.to_container(w2v_args.model, resolve=True, enum_to_str=True)
    if source.get("conv_pos_batch_norm", False):
        raise CheckpointError(
            f"{path}: this HuBERT model has a batch-normed positional convolution (conv_pos_batch_norm=true); only "
            "the weight-normed one of fairseq's HuBERT and wav2vec2 checkpoints is supported"
        )
    values = {**_defaults(HubertConfig), **source}
    fields = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    model = OmegaConf.merge(OmegaConf.structured(Wav2Vec2Config()), {k: v for k, v in values.items() if k in fields})
    model = OmegaConf.create(OmegaConf.to_container(model, enum_to_str=True))
    if arg_overrides:
        overwrite_args_by_name(model, arg_overrides)
    model._name = HUBERT
    mapped = w2v_args.copy()
    with open_dict(mapped):
        mapped.model = model
    return mapped


def wav2vec2_weights(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A ``HubertModel`` state dict without its pre-training-only weights: the keys of ``Wav2Vec2Model``."""
    return {k: v for k, v in state.items() if not k.startswith(HUBERT_PRETRAINING_ONLY)}


def hubert_frame_lengths(input_lengths: torch.Tensor, num_samples: int, num_frames: int) -> torch.Tensor:
    """The unpadded frames per utterance under HuBERT's rule (``HubertModel.forward_padding_mask``): the padding
    mask loses its last ``num_samples % num_frames`` samples and is cut into ``num_frames`` chunks of
    ``num_samples // num_frames``; a frame is padding when its whole chunk is. For audio padded at the end (as
    fairseq's collaters pad it) that is ``ceil(n / chunk)`` frames, at most ``num_frames``.

    Args: ``input_lengths`` ``(B,)`` unpadded samples; ``num_samples`` the padded batch's length ``S``;
    ``num_frames`` the CNN's output length ``T`` for ``S`` samples. Returns ``(B,)`` int64.
    """
    chunk = num_samples // num_frames
    frames = torch.div(input_lengths.long() + chunk - 1, chunk, rounding_mode="floor")
    return frames.clamp(max=num_frames)


def hubert_pretraining_cfg(model_overrides: Optional[Dict[str, Any]] = None, normalize: bool = False,
                           label_rate: float = 50.0) -> DictConfig:
    """A full fairseq config of a HuBERT pre-training run (``model._name=hubert``, ``hubert_pretraining`` task,
    k-means labels ``km``): what a ``hubert`` checkpoint stores as ``cfg`` and a ``hubert_ctc`` one as
    ``model.w2v_args``. ``model_overrides`` replace ``HubertConfig`` defaults (e.g. :data:`HUBERT_LARGE`)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.task = OmegaConf.structured(HubertPretrainingConfig(data="", labels=["km"], label_rate=label_rate,
                                                                normalize=normalize))
        cfg.task._name = "hubert_pretraining"
        cfg.model = OmegaConf.structured(HubertConfig(**(model_overrides or {})))
        cfg.model._name = HUBERT
        cfg.criterion = OmegaConf.create({"_name": "hubert"})
    return cfg


def write_hubert_checkpoint(path: str, model_overrides: Optional[Dict[str, Any]] = None, normalize: bool = False,
                            seed: int = 0, args_style: bool = False, num_units: int = 20) -> None:
    """Write a randomly initialised HuBERT *pre-training* checkpoint in fairseq's format, built with fairseq's own
    ``HubertModel`` and config classes (``num_units`` k-means units, their embeddings in ``label_embs_concat``; the
    dictionary in ``task_state`` as fairseq saves it): what tests use in place of ``hubert_base_ls960.pt``.
    ``args_style`` writes the old format (an ``argparse.Namespace`` under ``args``) of the released checkpoints."""
    from fairseq.data import Dictionary
    from fairseq.models.hubert.hubert import HubertModel

    cfg = hubert_pretraining_cfg(model_overrides, normalize)
    units = Dictionary()
    for i in range(num_units):
        units.add_symbol(str(i))
    torch.manual_seed(seed)
    model = HubertModel(cfg.model, cfg.task, [units])
    state = {
        "model": model.state_dict(),
        "task_state": {"dictionaries": [units]},
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {}, "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if args_style:
        flat = {}
        for section in ("common", "dataset", "optimization", "checkpoint", "distributed_training", "task", "model"):
            flat.update(plain[section])
        flat.pop("_name", None)
        state["args"] = argparse.Namespace(arch=HUBERT, task="hubert_pretraining", criterion="hubert", **flat)
    else:
        state["cfg"] = plain
    save_atomic(state, path, force=True)


register_family(HUBERT, lambda path, w2v_args, overrides, weights: (hubert_as_wav2vec2(path, w2v_args, overrides),
                                                                      wav2vec2_weights(weights)))
