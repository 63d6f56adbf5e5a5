"""Greedy (Viterbi, best path) CTC decoding into fairseq's word strings."""
from typing import List, Optional

import torch
from fairseq.data.data_utils import post_process


def greedy_units(logits: torch.Tensor, lengths: Optional[torch.Tensor], blank: int) -> List[List[int]]:
    """Best-path CTC decoding.

    Args:
        logits: ``(B, T, V)`` scores (log-probs or logits: only the argmax matters).
        lengths: ``(B,)`` valid frames per utterance, or ``None`` (all ``T``).
        blank: index of the CTC blank.
    Returns:
        Per utterance, the unit indices after merging repeats and removing blanks.
    """
    best = logits.argmax(-1).cpu()
    out = []
    for b in range(best.size(0)):
        toks = best[b, : int(lengths[b])] if lengths is not None else best[b]
        toks = toks.unique_consecutive()
        out.append(toks[toks != blank].tolist())
    return out


def units_to_words(dictionary, units: List[int], post_process_type: str = "letter") -> List[str]:
    """Unit indices -> words, as fairseq's CTC criterion and ``infer.py`` do (``post_process``)."""
    return post_process(dictionary.string(units), post_process_type).split()


def target_words(dictionary, target: torch.Tensor, post_process_type: str = "letter") -> List[str]:
    """A padded target row -> reference words (padding and eos removed)."""
    keep = (target != dictionary.pad()) & (target != dictionary.eos())
    return units_to_words(dictionary, target[keep].tolist(), post_process_type)
