"""Checkpoints the experiments (and the tests) make: randomly initialised wav2vec2 pre-training checkpoints in
fairseq's format, built with fairseq's own classes (what stands in for ``wav2vec_small.pt`` where none can be
downloaded), and trained checkpoints made ready to ship."""
import argparse
import os
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf, open_dict


def wav2vec2_pretraining_cfg(model_overrides: Optional[Dict[str, Any]] = None, normalize: bool = False) -> DictConfig:
    """A full fairseq config of a wav2vec2 pre-training run (``model._name=wav2vec2``, ``audio_pretraining``
    task): what a pre-training checkpoint stores as ``cfg`` and a fine-tuning model as ``model.w2v_args``.
    ``model_overrides`` replace ``Wav2Vec2Config`` defaults (which are wav2vec2-base)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.model = OmegaConf.structured(Wav2Vec2Config(**(model_overrides or {})))
        cfg.model._name = "wav2vec2"
        cfg.task = OmegaConf.structured(AudioPretrainingConfig(data="", normalize=normalize))
        cfg.task._name = "audio_pretraining"
        cfg.criterion = OmegaConf.create({"_name": "wav2vec"})
    return cfg


def _args_style(cfg: DictConfig) -> argparse.Namespace:
    """``cfg`` as fairseq's old checkpoints stored it: one flat ``argparse.Namespace``."""
    flat = {}
    for section in ("common", "dataset", "optimization", "checkpoint", "distributed_training", "task", "model"):
        flat.update(OmegaConf.to_container(cfg[section], resolve=True, enum_to_str=True))
    flat.pop("_name", None)
    return argparse.Namespace(arch="wav2vec2", task="audio_pretraining", criterion="wav2vec", **flat)


def write_wav2vec2_checkpoint(
    path: str,
    model_overrides: Optional[Dict[str, Any]] = None,
    normalize: bool = False,
    seed: int = 0,
    args_style: bool = False,
) -> None:
    """Write a randomly initialised wav2vec2 *pre-training* checkpoint in fairseq's format, built with fairseq's
    own ``Wav2Vec2Model`` and config classes: what tests and benchmarks use in place of ``wav2vec_small.pt``.

    ``args_style`` writes the old format (an ``argparse.Namespace`` under ``args``, no ``cfg``) that fairseq
    converts on load.
    """
    import torch
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Model

    from fairseq_prune.io.checkpoints import save_atomic

    cfg = wav2vec2_pretraining_cfg(model_overrides, normalize)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(cfg.model)
    state = {
        "model": model.state_dict(),
        "optimizer_history": [
            {"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam", "lr_scheduler_state": {},
             "num_updates": 0}
        ],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    if args_style:
        state["args"] = _args_style(cfg)
    else:
        state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    save_atomic(state, path, force=True)


def random_init_model(start: str, work: str, seed: int = 1) -> str:
    """A randomly initialised wav2vec2 pre-training checkpoint of ``start``'s shape (fairseq's own classes and
    initialisation), written once under ``work``: the baseline that shows what pre-training is worth."""
    from fairseq_prune.io.checkpoints import read_checkpoint

    path = os.path.join(work, f"random_init-seed{seed}.pt")
    if not os.path.exists(path):
        cfg = read_checkpoint(start)["cfg"]
        model = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_name"}
        write_wav2vec2_checkpoint(path, model, normalize=bool(cfg.task.normalize), seed=seed)
    return path


def is_finetuned(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is a model fine-tuned with CTC (it can be a distillation teacher), not a
    self-supervised one."""
    from fairseq_prune.io.checkpoints import read_checkpoint

    return "ctc" in read_checkpoint(checkpoint)["cfg"]["model"]["_name"]


def ship_checkpoint(trained: str, out: str, provenance_key: str, provenance: dict) -> dict:
    """Write ``trained``'s weights in float16 to ``out`` (atomically), without optimizer or criterion state, with
    ``provenance`` under ``provenance_key``: a normal fairseq checkpoint that ``model.w2v_path`` accepts. Returns
    the state written."""
    import torch

    from fairseq_prune.io.checkpoints import save_atomic

    state = torch.load(trained, weights_only=False)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    state["last_optimizer_state"] = None
    state["criterion"] = None
    state[provenance_key] = provenance
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_atomic(state, out, force=True)
    return state
