"""Which units of a gated structure survive export, and by what their outputs are scaled.

A unit is kept when its deterministic (eval-mode) gate is non-zero; its gate value, which may lie between 0 and
1, is folded into the weights that consume it. Each gated module uses :func:`kept_units` in its ``pruned`` method.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .hard_concrete import HardConcrete, combine


def support(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Indices of the non-zero entries of ``mask``, or ``None`` when every entry is non-zero (or no mask).

    A layer never has an empty support: when every entry is 0 the first channel stands in (its output is
    multiplied by 0 anyway), which is also the channel export keeps in that case."""
    if mask is None:
        return None
    nz = mask > 0
    if bool(nz.all()):
        return None
    if not bool(nz.any()):
        nz[0] = True
    return nz.nonzero().squeeze(1)


@dataclass
class Selection:
    """The kept units of one structure: their indices ``(k,)`` in increasing order and the eval-mode multiplier
    of each ``(k,)``."""

    index: torch.Tensor
    scale: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.index.numel())


def kept_units(n: int, *gates: Optional[HardConcrete], round_to: int = 1, min_one: bool = False) -> Selection:
    """The units of a structure of ``n`` units gated by the product of ``gates`` (a unit gate ``(n,)`` and/or a
    block gate ``(1,)``; ``None``: absent) that export keeps. No gate: all, with scale 1.

    ``min_one`` keeps one unit when all are closed (a conv layer, see :func:`support`). ``round_to > 1`` adds
    closed units, those with the largest summed ``log_alpha``, until the count is a multiple of ``round_to``
    (at most ``n``); they are kept with scale 0.
    """
    present = [g for g in gates if g is not None]
    if not present:
        return Selection(torch.arange(n), torch.ones(n))
    mask = combine(*(g.deterministic().detach() for g in present)).expand(n)
    keep = support(mask) if min_one else mask.nonzero().squeeze(1)
    keep = torch.arange(n) if keep is None else keep
    if round_to > 1 and keep.numel() > 0:
        want = min(n, int(math.ceil(keep.numel() / round_to) * round_to))
        if want > keep.numel():
            closed = torch.ones(n, dtype=torch.bool)
            closed[keep] = False
            candidates = closed.nonzero().squeeze(1)
            score = sum(g.log_alpha.detach() for g in present).expand(n)
            order = torch.argsort(score[candidates], descending=True)
            keep = torch.cat([keep, candidates[order[: want - keep.numel()]]])
    keep, _ = torch.sort(keep)
    return Selection(keep, mask[keep])
