"""Distillation from a dense CTC teacher while pruning (the prediction-layer distillation of CoFi and DPHuBERT,
applied to CTC posteriors): the pruned student's frame posteriors are pulled towards a frozen, fine-tuned dense
model's on the same (unmasked) audio. The same teacher pass gives the hidden states of layer-wise distillation
(:mod:`.layer_distillation`).

    distill = sum over the batch's non-padded frames t of  KL(p_teacher(. | t) || p_student(. | t))

a sum over frames like fairseq's CTC loss is a sum over utterances, so ``loss = ctc + weight * distill`` is
normalised by the same sample size.
"""
from typing import Any, Dict

import torch
from fairseq import models

from ..io.checkpoints import read_checkpoint
from ..io.errors import CheckpointError, ConfigError, one_line
from .layer_distillation import hidden_states


class CtcTeacher:
    """A frozen dense CTC model read from a fairseq checkpoint (e.g. the dense recipe's ``checkpoint_best.pt``).

    Deliberately not an ``nn.Module`` attribute of the criterion: its weights are neither trained, nor saved in the
    student's checkpoints, nor all-reduced.

    Args:
        path: the teacher checkpoint (``criterion.distill_teacher``); its output layer must have the task's
            dictionary size.
        task: the training task (gives the dictionary the teacher's model is built with).
    """

    def __init__(self, path: str, task) -> None:
        state = read_checkpoint(path)  # CheckpointError naming the file
        try:  # the model registry, not task.build_model: building the teacher must not touch the task's state
            model = models.build_model(state["cfg"].model, task, from_checkpoint=True)
            model.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"].model)
        except Exception as e:  # noqa: BLE001  (one line naming the file)
            raise CheckpointError(f"criterion.distill_teacher={path}: cannot load it as a teacher "
                                  f"({type(e).__name__}: {one_line(e)[:300]})") from None
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.path = path

    @torch.no_grad()
    def outputs(self, net_input: Dict[str, Any]) -> Dict[str, Any]:
        """One teacher forward pass: ``log_probs`` ``(T, B, V)`` float32 and ``hidden``, every Transformer layer's
        output ``(T, B, C)`` (for layer-wise distillation)."""
        source = net_input["source"]
        if next(self.model.parameters()).device != source.device:
            self.model.to(source.device)
        out = self.model(**net_input)
        return {"log_probs": self.model.get_normalized_probs(out, log_probs=True).float(),
                "hidden": hidden_states(out.get("layer_results") or [])}

    def kl(self, teacher_out: Dict[str, Any], student_out: Dict[str, Any]) -> torch.Tensor:
        """Summed KL(teacher || student) over the non-padded frames (a scalar with the student's gradient).

        ``teacher_out``: :meth:`outputs`; ``student_out`` is the student's net output: ``encoder_out`` (T, B, V)
        logits, ``padding_mask`` (B, T) or None."""
        teacher = teacher_out["log_probs"]
        logits = student_out["encoder_out"]
        if teacher.shape != logits.shape:
            raise ConfigError(f"criterion.distill_teacher={self.path}: the teacher outputs {tuple(teacher.shape)} "
                              f"(frames, batch, units) where the student outputs {tuple(logits.shape)}: it must be a "
                              "model of the same dictionary and feature extractor strides")
        student = torch.log_softmax(logits.float(), dim=-1)
        per_frame = (teacher.exp() * (teacher - student)).sum(-1)  # (T, B)
        padding = student_out.get("padding_mask")
        if padding is not None:
            per_frame = per_frame.masked_fill(padding.transpose(0, 1), 0.0)
        return per_frame.sum()
