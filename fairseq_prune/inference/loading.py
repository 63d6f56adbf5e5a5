"""The model side of decoding: a checkpoint that holds a CTC model trained with an audio fine-tuning task, built
for decoding (``make_generation_fast_``, eval mode, on CPU or CUDA) with its task set up on a manifest folder."""
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch
from fairseq import checkpoint_utils
from fairseq.models import MODEL_REGISTRY
from fairseq.models.wav2vec.wav2vec2_asr import Wav2VecCtc
from fairseq.tasks import TASK_REGISTRY
from fairseq.tasks.audio_finetuning import AudioFinetuningTask
from omegaconf import open_dict

from ..io.checkpoints import CheckpointError, model_name, read_checkpoint
from ..layer_sizes import receptive_field
from .inputs import InferenceError

logger = logging.getLogger("fairseq_prune.inference")  # the name its log lines have always had


@dataclass
class LoadedModel:
    """A CTC model ready for decoding, with the task that reads the manifest."""

    path: str
    model: Any
    task: Any
    cfg: Any
    model_name: str
    labels: str
    default_post_process: str
    device: str
    #: the fewest audio samples that give one output frame (:func:`~fairseq_prune.layer_sizes.receptive_field`)
    receptive_field: int = 1


def _check_ctc_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Refuse a checkpoint whose model is not a CTC model, or whose task is not an audio fine-tuning task."""
    name = model_name(state)
    cls = MODEL_REGISTRY.get(name)
    if cls is None or not issubclass(cls, Wav2VecCtc):
        raise InferenceError(
            f"{path}: holds model {name!r}, not a CTC model that can be decoded (expected wav2vec_ctc, "
            "wav2vec2_ctc_pruning or a subclass of fairseq's Wav2VecCtc)"
        )
    task_name = str(state["cfg"].task.get("_name", None))
    task_cls = TASK_REGISTRY.get(task_name)
    if task_cls is None or not issubclass(task_cls, AudioFinetuningTask):
        raise InferenceError(
            f"{path}: was trained with task {task_name!r}; decoding needs an audio fine-tuning task "
            "(audio_finetuning, audio_pruning or a subclass)"
        )


def read_ctc_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint and check that it holds a CTC model trained with an audio fine-tuning task."""
    if not os.path.isfile(path):
        raise InferenceError(f"{path}: no such checkpoint file (--path)")
    try:
        state = read_checkpoint(path)
    except CheckpointError as e:
        raise InferenceError(str(e)) from e
    _check_ctc_checkpoint(path, state)
    state["args"] = None  # read_checkpoint converted old args-style configs into state["cfg"]: use that
    return state


def checkpoint_labels(state: Dict[str, Any]) -> str:
    """The ``task.labels`` a checkpoint was trained with (``ltr`` when it does not say)."""
    return str(state["cfg"].task.get("labels", None) or "ltr")


def set_decoding_task(task_cfg: Any, data: str, labels: str) -> None:
    """Point a task config at manifest folder ``data`` and label extension ``labels``, and reset the fields that
    only shape training batches (``max_sample_size``, ``min_sample_size``, ``num_batch_buckets``) to the defaults
    fairseq's ``infer.py`` runs with, so that no utterance is cropped or skipped."""
    task_cfg.data = os.path.abspath(data)
    task_cfg.labels = labels
    task_cfg.max_sample_size = None
    task_cfg.min_sample_size = None
    task_cfg.num_batch_buckets = 0


def load_model(path: str, state: Dict[str, Any], data: str, labels: str, cpu: bool = False) -> LoadedModel:
    """Build the model of a checkpoint read by :func:`read_ctc_checkpoint` and set up its task on manifest
    folder ``data``.

    The checkpoint's task config is kept except for what :func:`set_decoding_task` sets.
    """
    name = model_name(state)
    cfg = state["cfg"]
    with open_dict(cfg):
        set_decoding_task(cfg.task, data, labels)
    criterion = cfg.get("criterion", None)
    default_post = str(criterion.get("post_process", None) or "letter") if criterion is not None else "letter"
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    except (RuntimeError, KeyError, ValueError) as e:  # mostly: output layer and dictionary sizes differ
        dict_file = os.path.join(data, f"dict.{labels}.txt")
        raise InferenceError(
            f"{path}: the model does not fit {dict_file} (not the dictionary it was trained with?): "
            f"{type(e).__name__}: {e}"
        ) from e
    model = models[0]
    use_cuda = not cpu and torch.cuda.is_available()
    if not cpu and not use_cuda:
        logger.info("CUDA not available: decoding on CPU")
    model.make_generation_fast_()  # eval mode, weight norm removed: what fairseq's infer.py does
    model.eval()
    if use_cuda:
        model.cuda()
    return LoadedModel(path, model, task, cfg, name, labels, default_post, "cuda" if use_cuda else "cpu",
                       receptive_field(conv_layers(model)))


def conv_layers(model: Any) -> List[Tuple[int, int, int]]:
    """``(channels, kernel, stride)`` of each convolution of a wav2vec2 CTC model's feature extractor, in order:
    read from the modules, so that every checkpoint kind (fairseq's, gated, exported, HuBERT read as wav2vec2)
    gives what it computes."""
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    return [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in extractor.modules()
            if isinstance(m, torch.nn.Conv1d)]
