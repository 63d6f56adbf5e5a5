"""Layer-wise distillation while pruning (after DPHuBERT and CoFiPruning): the pruned student's hidden states after
chosen Transformer layers, each mapped by a small linear layer, are pulled towards the dense teacher's hidden
states after the same layers, on the same audio.

    layer_loss = sum over chosen layers l, non-padded frames t of
                 mean_c |W_l h_s(l, t) + b_l - h_t(l, t)|  +  (1 - cos(W_l h_s(l, t) + b_l, h_t(l, t)))

``W_l`` starts as the identity and ``b_l`` at zero, so a student that computes what the teacher computes starts at
loss 0. The maps are parameters of the criterion (trained with the model's optimizer group, saved in fairseq's
checkpoints under ``criterion`` and restored on resume) and never part of the model: export never sees them.
A sum over frames, like fairseq's CTC loss over utterances, so the criterion adds it with the same normalisation.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io.errors import ConfigError


def hidden_states(layer_results) -> List[torch.Tensor]:
    """The output ``(T, B, C)`` of every Transformer layer from fairseq's ``layer_results`` (``(x, z, lr)`` per
    layer, as ``Wav2VecEncoder.forward`` returns them)."""
    return [entry[0] for entry in layer_results]


class HiddenStateMaps(nn.Module):
    """One ``nn.Linear(dim, dim)`` per distilled layer, initialised to the identity.

    Args:
        layers: the distilled Transformer layers, 1-based (``criterion.distill_layers``; 1 is the first layer's
            output), each at most ``num_layers``.
        dim: ``encoder_embed_dim`` of student and teacher (structured pruning keeps it).
        num_layers: the student's ``encoder_layers``.
    """

    def __init__(self, layers: Sequence[int], dim: int, num_layers: int) -> None:
        super().__init__()
        if not layers:
            raise ConfigError("criterion.distill_layers is empty: name the Transformer layers to distil (1-based)")
        if len(set(layers)) != len(layers) or any(not (1 <= layer <= num_layers) for layer in layers):
            raise ConfigError(f"criterion.distill_layers={list(layers)}: each layer once, from 1 to the model's "
                              f"{num_layers} Transformer layers")
        self.layers = [int(layer) for layer in layers]
        self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in self.layers)
        with torch.no_grad():
            for m in self.maps:
                m.weight.copy_(torch.eye(dim))
                m.bias.zero_()

    def forward(self, student: List[torch.Tensor], teacher: List[torch.Tensor],
                padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Summed loss over the chosen layers and non-padded frames (a scalar with the student's and the maps'
        gradients). ``student``, ``teacher``: every layer's output ``(T, B, C)`` (:func:`hidden_states`);
        ``padding_mask``: ``(B, T)``, True at padding, or None."""
        if len(student) != len(teacher) or len(student) < max(self.layers):
            raise ConfigError(f"layer-wise distillation: the student returned {len(student)} layer outputs and "
                              f"the teacher {len(teacher)}; both need every layer (model.layerdrop=0) and at least "
                              f"layer {max(self.layers)}")
        total = student[0].new_zeros((), dtype=torch.float32)
        for layer, proj in zip(self.layers, self.maps):
            s, t = student[layer - 1].float(), teacher[layer - 1].float()
            if s.shape != t.shape:
                raise ConfigError(f"layer-wise distillation: layer {layer} of the student is {tuple(s.shape)} "
                                  f"(frames, batch, dim), the teacher's {tuple(t.shape)}")
            mapped = F.linear(s, proj.weight.float(), proj.bias.float())
            per_frame = (mapped - t).abs().mean(-1) + (1.0 - F.cosine_similarity(mapped, t, dim=-1, eps=1e-6))
            if padding_mask is not None:
                per_frame = per_frame.masked_fill(padding_mask.transpose(0, 1), 0.0)
            total = total + per_frame.sum()
        return total
