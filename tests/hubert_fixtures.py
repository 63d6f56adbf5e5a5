"""HuBERT checkpoints for the tests, written with fairseq's own classes: a mini ``hubert`` pre-training checkpoint
and ``hubert_ctc`` models built and fine-tuned the way fairseq's HuBERT fine-tuning builds them (task
``hubert_pretraining`` with ``fine_tuning=true``, letter labels)."""
from typing import Optional

import torch
from omegaconf import OmegaConf, open_dict

from helpers import SMALL_W2V, padded_batch, save_finetuned

#: a 2-layer HuBERT small enough for unit tests: the unit tests' wav2vec2 shape, HuBERT's projection heads
SMALL_HUBERT = dict(SMALL_W2V, final_dim=16, untie_final_proj=True)


def hubert_ctc_root_cfg(w2v_path: str, data: str, normalize: bool = False, **model_fields):
    """A full FairseqConfig of fairseq's HuBERT CTC fine-tuning (examples/hubert/config/finetune/base_10h.yaml's
    task and model) on the manifest folder ``data`` (``dict.ltr.txt``)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert.hubert_asr import HubertCtcConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.task = OmegaConf.structured(HubertPretrainingConfig(data=data, fine_tuning=True, labels=["ltr"],
                                                                normalize=normalize, single_target=True))
        cfg.task._name = "hubert_pretraining"
        cfg.model = OmegaConf.structured(HubertCtcConfig(w2v_path=w2v_path, **model_fields))
        cfg.model._name = "hubert_ctc"
        cfg.criterion = OmegaConf.create({"_name": "ctc", "post_process": "letter"})
        cfg.common.cpu = True
    return cfg


def build_hubert_ctc(w2v_path: str, data: str, normalize: bool = False, **model_fields):
    """fairseq's ``HubertCtc`` on ``w2v_path``, built by fairseq's own task and model code; returns (cfg, model).

    fairseq-fixed's ``HubertEncoder`` reads ``cfg.autoregressive``, a field only ``HubertSeq2SeqConfig`` has, so
    ``task.build_model`` fails on a ``HubertCtcConfig`` (``Key 'autoregressive' not in 'HubertCtcConfig'``): the
    model config gets ``autoregressive: false`` (what a CTC task means) and ``HubertCtc.build_model`` is called on
    it directly (fairseq's ``build_model`` would first merge it into ``HubertCtcConfig``, which rejects the key).
    """
    from fairseq import tasks
    from fairseq.models.hubert.hubert_asr import HubertCtc

    import fairseq_prune  # noqa: F401 (registers the safe globals fairseq's loader needs for torch.load)

    cfg = hubert_ctc_root_cfg(w2v_path, data, normalize, **model_fields)
    task = tasks.setup_task(cfg.task)
    with open_dict(cfg):
        cfg.model = {**OmegaConf.to_container(cfg.model, resolve=True), "autoregressive": False}
    return cfg, HubertCtc.build_model(cfg.model, task)  # fills cfg.model.w2v_args, as fine-tuning does


def write_hubert_ctc_checkpoint(path: str, hubert_path: str, data: str, seed: int = 5,
                                normalize: bool = False) -> torch.nn.Module:
    """A fine-tuned ``hubert_ctc`` checkpoint as fairseq writes it (cfg with model.w2v_args, full state dict,
    weights moved away from the pre-trained ones); returns the model (eval mode)."""
    torch.manual_seed(seed)
    cfg, model = build_hubert_ctc(hubert_path, data, normalize, feature_grad_mult=1.0)
    return save_finetuned(model, cfg, path)


def encoder_outputs(model, x: torch.Tensor, pad: Optional[torch.Tensor]):
    """``(encoder_out (T, B, V), frame padding mask (B, T) or None)`` of a CTC model in eval mode."""
    with torch.no_grad():
        out = model(source=x, padding_mask=pad)
    return out["encoder_out"], out["padding_mask"]


def assert_same_hubert_outputs(ref, ours, lengths, tol=1e-5):
    """Same encoder output on every frame (padded ones included), same frame padding mask; and the CTC logits of
    the unpadded frames are fairseq's (our padded frames are set to blank as ``wav2vec_ctc`` sets them).
    Returns the frame padding mask."""
    x, pad = padded_batch(lengths)
    a, pa = encoder_outputs(ref, x, pad)
    b, pb = encoder_outputs(ours, x, pad)
    assert a.shape == b.shape
    assert torch.equal(pa, pb)
    assert pa.any(), "the batch should contain padded frames"
    diff = (a - b).abs().max().item()
    assert diff <= tol, f"max abs diff {diff}"
    with torch.no_grad():
        logits = ours.get_logits(ours(source=x, padding_mask=pad))
    assert torch.isfinite(logits).logical_not().any(-1).T.equal(pa)
    assert (logits.transpose(0, 1)[~pa] - a.transpose(0, 1)[~pa]).abs().max().item() <= tol
    return pa
