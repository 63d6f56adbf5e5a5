"""Turn a gated ``wav2vec2_ctc_pruning`` model into a physically smaller one.

Every structure keeps the units whose deterministic (eval-mode) gate is non-zero; a kept unit's gate value is
folded into the weights that consume it, so the exported model computes what the gated model computes in eval
mode:

* conv layer ``l`` < last: rows of its conv (and norm) are kept, its mask is folded into the input channels of
  conv ``l + 1``; the last conv layer's mask is folded into the feature LayerNorm's affine parameters, and the
  feature projection keeps the matching input columns;
* attention: q/k/v rows of the kept heads, ``out_proj`` columns scaled by the head masks (a head-level and a
  layer-level gate multiply); no head left: only ``out_proj.bias`` remains;
* FFN: ``fc1`` rows of the kept units, ``fc2`` columns scaled by the unit masks; no unit left: ``fc2.bias``.

With ``round_to`` (for hardware-friendly sizes) a structure keeps extra units, the ones with the largest
``log_alpha`` among those closed, with a folded mask of 0: outputs are unchanged, only the shapes grow. Conv
layers whose channels feed a LayerNorm across channels (all of them with ``extractor_mode=layer_norm``, the last
one always) are not rounded, since extra channels would change the normalisation statistics.

The result is the same model class built from config lists (``conv_channels``, ``attention_heads``,
``ffn_units``) with every ``prune_*`` flag off, loaded with strict key matching.
"""
import copy
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from fairseq.dataclass.utils import merge_with_parent
from omegaconf import DictConfig, OmegaConf, open_dict

from .checkpoints import CheckpointError, model_name, read_checkpoint
from .cost import REFERENCE_SAMPLES, Cost, Wav2Vec2Shape, cost_breakdown
from .models.wav2vec2_ctc_pruning import PrunableWav2VecEncoder, Wav2Vec2CtcPruning, Wav2Vec2CtcPruningConfig
from .modules.conv_feature_extractor import support
from .modules.hard_concrete import HardConcrete, combine, is_gate_key

logger = logging.getLogger(__name__)

_W2V = "w2v_encoder.w2v_model."
PRUNE_FLAGS = (
    "prune_conv_channels",
    "prune_attention_heads",
    "prune_attention_layers",
    "prune_ffn_units",
    "prune_ffn_layers",
)


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


@dataclass
class Selection:
    """Kept unit indices and the (eval-mode) multiplier of each kept unit, for one structure."""

    index: torch.Tensor
    scale: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.index.numel())


def _select(
    mask: Optional[torch.Tensor],
    n: int,
    score: Optional[torch.Tensor],
    round_to: int,
    min_one: bool,
) -> Selection:
    """Units to keep given a mask (``None`` = ungated, keep all with scale 1)."""
    if mask is None:
        return Selection(torch.arange(n), torch.ones(n))
    keep = support(mask) if min_one else mask.nonzero().squeeze(1)
    keep = torch.arange(n) if keep is None else keep
    if round_to > 1 and keep.numel() > 0:
        want = min(n, int(math.ceil(keep.numel() / round_to) * round_to))
        if want > keep.numel():
            closed = torch.ones(n, dtype=torch.bool)
            closed[keep] = False
            candidates = closed.nonzero().squeeze(1)
            order = torch.argsort(score[candidates], descending=True)
            keep = torch.cat([keep, candidates[order[: want - keep.numel()]]])
    keep, _ = torch.sort(keep)
    return Selection(keep, mask[keep])


def _gate_mask(*gates: Optional[HardConcrete]) -> Optional[torch.Tensor]:
    return combine(*(g.deterministic().detach() if g is not None else None for g in gates))


def _score(*gates: Optional[HardConcrete]) -> Optional[torch.Tensor]:
    present = [g.log_alpha.detach() for g in gates if g is not None]
    return sum(present) if present else None


def _head_rows(sel: Selection, head_dim: int) -> torch.Tensor:
    return (sel.index.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)


@dataclass
class ExportResult:
    model: Wav2Vec2CtcPruning
    model_cfg: DictConfig
    summary: Dict
    before: Dict[str, Cost] = field(default_factory=dict)
    after: Dict[str, Cost] = field(default_factory=dict)
    unrounded: Optional[Dict[str, Cost]] = None


def prune(model: Wav2Vec2CtcPruning, model_cfg: DictConfig, round_to: int = 1) -> ExportResult:
    """The compact model (and its config) computing what ``model`` computes in eval mode."""
    w2v = model.w2v_model
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if not is_gate_key(k)}
    fe = w2v.feature_extractor
    n_conv = len(fe.conv_layers)
    layer_norm_mode = w2v.cfg.extractor_mode == "layer_norm"

    conv_sel: List[Selection] = []
    for i, gate in enumerate(w2v.conv_gates()):
        n = fe.conv_layers[i][0].out_channels
        roundable = not layer_norm_mode and i < n_conv - 1
        conv_sel.append(_select(_gate_mask(gate), n, _score(gate), round_to if roundable else 1, min_one=True))

    prev: Optional[Selection] = None
    for i, sel in enumerate(conv_sel):
        p = f"{_W2V}feature_extractor.conv_layers.{i}."
        w = sd[p + "0.weight"][sel.index]
        if prev is not None:
            w = w[:, prev.index] * prev.scale.view(1, -1, 1)  # fold the previous layer's mask
        sd[p + "0.weight"] = w
        for key in ("0.bias", "2.weight", "2.bias", "2.1.weight", "2.1.bias"):
            if p + key in sd:
                sd[p + key] = sd[p + key][sel.index]
        prev = sel
    last = conv_sel[-1]
    for key in ("weight", "bias"):
        sd[f"{_W2V}layer_norm.{key}"] = sd[f"{_W2V}layer_norm.{key}"][last.index] * last.scale
    if f"{_W2V}post_extract_proj.weight" in sd:
        sd[f"{_W2V}post_extract_proj.weight"] = sd[f"{_W2V}post_extract_proj.weight"][:, last.index]

    heads, units = [], []
    for i, layer in enumerate(w2v.encoder_layers()):
        p = f"{_W2V}encoder.layers.{i}."
        attn = layer.self_attn
        hsel = _select(
            _gate_mask(layer.head_gate, layer.attn_layer_gate), attn.num_heads,
            _score(layer.head_gate, layer.attn_layer_gate), 1, min_one=False,
        )
        heads.append(hsel.size)
        if attn.num_heads > 0:
            rows = _head_rows(hsel, attn.head_dim)
            for proj in ("q_proj", "k_proj", "v_proj"):
                if hsel.size:
                    sd[f"{p}self_attn.{proj}.weight"] = sd[f"{p}self_attn.{proj}.weight"][rows]
                    sd[f"{p}self_attn.{proj}.bias"] = sd[f"{p}self_attn.{proj}.bias"][rows]
                else:
                    del sd[f"{p}self_attn.{proj}.weight"], sd[f"{p}self_attn.{proj}.bias"]
            if hsel.size:
                scale = hsel.scale.repeat_interleave(attn.head_dim)
                sd[f"{p}self_attn.out_proj.weight"] = sd[f"{p}self_attn.out_proj.weight"][:, rows] * scale
            else:
                del sd[f"{p}self_attn.out_proj.weight"]

        usel = _select(
            _gate_mask(layer.ffn_unit_gate, layer.ffn_layer_gate), layer.ffn_units,
            _score(layer.ffn_unit_gate, layer.ffn_layer_gate), round_to, min_one=False,
        )
        units.append(usel.size)
        if layer.ffn_units > 0:
            if usel.size:
                sd[f"{p}fc1.weight"] = sd[f"{p}fc1.weight"][usel.index]
                sd[f"{p}fc1.bias"] = sd[f"{p}fc1.bias"][usel.index]
                sd[f"{p}fc2.weight"] = sd[f"{p}fc2.weight"][:, usel.index] * usel.scale
            else:
                del sd[f"{p}fc1.weight"], sd[f"{p}fc1.bias"], sd[f"{p}fc2.weight"]

    new_cfg = copy.deepcopy(model_cfg)
    with open_dict(new_cfg):
        for flag in PRUNE_FLAGS:
            new_cfg[flag] = False
        new_cfg.conv_channels = [s.size for s in conv_sel]
        new_cfg.attention_heads = heads
        new_cfg.ffn_units = units
    vocab = model.w2v_encoder.proj.out_features
    compact = build_from_cfg(new_cfg, vocab)
    compact.load_state_dict(sd, strict=True)

    before_shape, after_shape = model.shape(), compact.shape()
    result = ExportResult(
        model=compact.eval(),
        model_cfg=new_cfg,
        summary={},
        before=cost_breakdown(before_shape, REFERENCE_SAMPLES),
        after=cost_breakdown(after_shape, REFERENCE_SAMPLES),
    )
    if round_to > 1:
        # what the same export costs without rounding (the deterministic counts)
        result.unrounded = cost_breakdown(before_shape, REFERENCE_SAMPLES, w2v.structure_counts("deterministic"))
    result.summary = {"family": w2v.family, **summarize(before_shape, after_shape, result, round_to)}
    return result


def summarize(before: Wav2Vec2Shape, after: Wav2Vec2Shape, result: ExportResult, round_to: int) -> Dict:
    from .cost import group_breakdown, totals

    def costs(parts):
        t = totals(parts)
        return {
            "params": int(t["total"].params),
            "macs": int(t["total"].macs),
            "cnn_params": int(t["cnn"].params),
            "cnn_macs": int(t["cnn"].macs),
            "groups": {k: {"params": int(v.params), "macs": int(v.macs)} for k, v in group_breakdown(parts).items()},
        }

    out = {
        "reference_seconds": REFERENCE_SAMPLES / 16000,
        "round_to": round_to,
        "before": {"conv_channels": list(before.conv_channels), "attention_heads": list(before.heads),
                   "ffn_units": list(before.ffn_units), **costs(result.before)},
        "after": {"conv_channels": list(after.conv_channels), "attention_heads": list(after.heads),
                  "ffn_units": list(after.ffn_units), **costs(result.after)},
    }
    if result.unrounded is not None:
        out["unrounded_macs"] = int(float(totals(result.unrounded)["total"].macs))
    return out


def target_dictionary(state: Dict, vocab_size: int, path: Optional[str] = None) -> Optional[Dict]:
    """The model's output units, to store in the exported checkpoint (``fairseq-prune-infer`` compares them with
    the dictionary it is given): read from ``path``, by default the training run's ``dict.{labels}.txt``
    (``None``, with a warning, when that file is gone)."""
    from fairseq.data import Dictionary

    task = state["cfg"].task
    default = os.path.join(str(task.get("data", None) or ""), f"dict.{task.get('labels', None) or 'ltr'}.txt")
    if not os.path.isfile(path or default):
        if path:
            raise CheckpointError(f"{path}: no such dictionary file (--dictionary)")
        logger.warning("%s not found: the exported model stores no dictionary, so decoding cannot check the one it "
                       "is given (pass --dictionary FILE)", default)
        return None
    path = path or default
    try:
        symbols = list(Dictionary.load(path).symbols)
    except (ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a fairseq dictionary ({e})") from e
    if len(symbols) != vocab_size:
        raise CheckpointError(
            f"{path} has {len(symbols)} units (specials included) but the model's output layer has {vocab_size}: "
            "not the dictionary the model was trained with (pass it with --dictionary)"
        )
    return {"file": os.path.abspath(path), "symbols": symbols}


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
