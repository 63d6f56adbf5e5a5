"""Turn a gated ``wav2vec2_ctc_pruning`` model into a physically smaller one: the driver of ``fairseq-prune-export``.

Every gated module knows which of its units are kept (those whose eval-mode gate is non-zero) and folds its gate
values into a smaller copy of itself (``pruned``): conv layers (:class:`~fairseq_prune.modules.conv_feature_extractor.
GatedConvFeatureExtractor`), the feature LayerNorm, attention heads (:class:`~fairseq_prune.modules.attention.
PrunableSelfAttention`), FFN units and whole blocks (:class:`~fairseq_prune.modules.encoder_layer.PrunableEncoderLayer`), and the
model (:meth:`~fairseq_prune.models.wav2vec2_ctc_pruning.Wav2Vec2CtcPruning.pruned`). The exported model computes what the gated
model computes in eval mode.

With ``round_to`` (for hardware-friendly sizes) a structure keeps extra units, the ones with the largest
``log_alpha`` among those closed, with a folded mask of 0: outputs are unchanged, only the shapes grow. Conv
layers whose channels feed a LayerNorm across channels (all of them with ``extractor_mode=layer_norm``, the last
one always) are not rounded, since extra channels would change the normalisation statistics.

The result is the same model class built from config lists (``conv_channels``, ``attention_heads``,
``ffn_units``) with every ``prune_*`` flag off, loaded with strict key matching. The report (summary, table,
plot) is :mod:`fairseq_prune.export.report`.
"""
import copy
import logging
import os
from typing import Dict, Optional, Tuple

from fairseq.dataclass.utils import merge_with_parent
from omegaconf import DictConfig, OmegaConf, open_dict

from ..cost import REFERENCE_SAMPLES, cost_breakdown
from ..io.checkpoints import CheckpointError, model_name, read_checkpoint
from ..io.dictionaries import find_dictionary_file, looked_in, stored_symbols
from ..layer_sizes import is_gate_key
from ..models.wav2vec2_ctc_pruning import (
    PrunableWav2VecEncoder,
    Wav2Vec2CtcPruning,
    Wav2Vec2CtcPruningConfig,
    compact_cfg,
)
from .report import summarize
from .result import ExportResult

logger = logging.getLogger(__name__)
def build_from_cfg(model_cfg: DictConfig, vocab_size: int) -> Wav2Vec2CtcPruning:
    """Build ``wav2vec2_ctc_pruning`` from a checkpoint's ``cfg.model`` (which embeds ``w2v_args``) without a
    task or data folder; weights are not loaded."""
    cfg = merge_with_parent(Wav2Vec2CtcPruningConfig(), model_cfg, remove_missing=True)
    return Wav2Vec2CtcPruning(cfg, PrunableWav2VecEncoder(cfg, vocab_size))


def load_gated(path: str) -> Tuple[Dict, Wav2Vec2CtcPruning]:
    """Read a checkpoint trained with ``wav2vec2_ctc_pruning`` and rebuild its model (eval mode)."""
    state = read_checkpoint(path)
    name = model_name(state)
    if name != "wav2vec2_ctc_pruning":
        raise CheckpointError(
            f"{path}: not trained with model wav2vec2_ctc_pruning (it holds model {name!r}); only gated "
            "checkpoints can be exported"
        )
    proj = state["model"].get("w2v_encoder.proj.weight")
    if proj is None:
        raise CheckpointError(f"{path}: no CTC output layer (w2v_encoder.proj.weight) in the state dict")
    if state["cfg"].model.get("w2v_args", None) is None:
        raise CheckpointError(f"{path}: cfg.model.w2v_args is missing (was the checkpoint saved by fairseq?)")
    if not any(is_gate_key(k) for k in state["model"]):
        raise CheckpointError(
            f"{path}: has no hard concrete gates (a dense or an already exported model), so there is nothing to "
            "export: decode it as it is (fairseq-prune-infer --path), or prune it first by training a gated "
            f"recipe from it (model.w2v_path={path})"
        )
    model = build_from_cfg(state["cfg"].model, proj.shape[0])
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model its config describes: {e}") from e
    return state, model.eval()


def prune(model: Wav2Vec2CtcPruning, model_cfg: DictConfig, round_to: int = 1) -> ExportResult:
    """The compact model (and its config, a copy of ``model_cfg``) computing what ``model`` computes in eval mode."""
    w2v = model.w2v_model
    pruned = model.pruned(round_to)
    new_cfg = compact_cfg(model_cfg, pruned.w2v_model.layer_sizes())
    compact = build_from_cfg(new_cfg, model.w2v_encoder.proj.out_features)
    compact.load_state_dict(pruned.state_dict(), strict=True)  # the config describes the pruned weights

    before_shape, after_shape = model.shape(), compact.shape()
    result = ExportResult(
        model=compact.eval(),
        model_cfg=new_cfg,
        family=w2v.family,
        round_to=round_to,
        sizes_before=before_shape.sizes,
        sizes_after=after_shape.sizes,
        before=cost_breakdown(before_shape, REFERENCE_SAMPLES),
        after=cost_breakdown(after_shape, REFERENCE_SAMPLES),
    )
    if round_to > 1:
        # what the same export costs without rounding (the deterministic counts)
        result.unrounded = cost_breakdown(before_shape, REFERENCE_SAMPLES, w2v.structure_counts("deterministic"))
    result.summary = summarize(result)
    return result


def target_dictionary(state: Dict, vocab_size: int, path: Optional[str] = None,
                      checkpoint: Optional[str] = None) -> Optional[Dict]:
    """The model's output units, to store in the exported checkpoint (``fairseq-prune-infer`` compares them with
    the dictionary it is given): read from ``path``, by default the training run's ``dict.{labels}.txt`` (in its
    ``task.data``, else beside ``checkpoint``: :mod:`fairseq_prune.io.dictionaries`), else the one fairseq's trainer
    stored in the checkpoint (``None``, with a warning saying where it looked, when there is none)."""
    from fairseq.data import Dictionary

    labels = state["cfg"].task.get("labels", None) or "ltr"
    trained = stored_symbols(state)
    if path is not None and not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such dictionary file (--dictionary)")
    found, candidates = (path, [path]) if path else find_dictionary_file(checkpoint, state, labels)
    if found is None:
        if trained:
            return {"file": f"{checkpoint or 'the checkpoint'} ({trained[1]})", "symbols": trained[0]}
        logger.warning("no dictionary found (%s): the exported model stores none, so decoding cannot check the one "
                       "it is given (pass --dictionary FILE)", looked_in(candidates))
        return None
    try:
        symbols = list(Dictionary.load(found).symbols)
    except (ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{found}: not a fairseq dictionary ({e})") from e
    if len(symbols) != vocab_size:
        raise CheckpointError(
            f"{found} has {len(symbols)} units (specials included) but the model's output layer has {vocab_size}: "
            "not the dictionary the model was trained with (pass it with --dictionary)"
        )
    if trained and trained[0] != symbols:
        raise CheckpointError(f"{found}: not the dictionary the model was trained with ({trained[1]}: other symbols "
                              "or order); pass that one with --dictionary")
    return {"file": os.path.abspath(found), "symbols": symbols}


def exported_state(state: Dict, result: ExportResult, source: str, dictionary: Optional[Dict] = None) -> Dict:
    """A fairseq checkpoint of the compact model: the training config with the new per-layer sizes and no
    gates, the plain ``ctc`` criterion, no optimizer state, the pruning summary and, when known, the model's
    dictionary (``target_dictionary``: the file it was read from and its symbols)."""
    cfg = copy.deepcopy(state["cfg"])
    with open_dict(cfg):
        cfg.model = result.model_cfg
        crit = cfg.get("criterion", None)
        ctc_keys = ("zero_infinity", "sentence_avg", "post_process")
        cfg.criterion = OmegaConf.create(
            {"_name": "ctc", **{k: crit[k] for k in ctc_keys if crit is not None and k in crit}}
        )
    history = state.get("optimizer_history") or [{}]
    return {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": result.model.state_dict(),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "CtcCriterion",
                "optimizer_name": history[-1].get("optimizer_name", "none"),
                "lr_scheduler_state": {},
                "num_updates": history[-1].get("num_updates", 0),
            }
        ],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
        "pruning_summary": {"source": source, **result.summary},
        **({"target_dictionary": dictionary} if dictionary else {}),
    }
