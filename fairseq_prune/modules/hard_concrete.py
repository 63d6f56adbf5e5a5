"""Hard concrete (L0) gates, Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0
Regularization" (ICLR 2018).

A gate over ``n`` units owns one parameter per unit, ``log_alpha``. In training mode it draws a mask
``z`` in [0, 1]^n from the stretched-and-clamped binary concrete distribution (exact 0s and 1s occur with
non-zero probability); in eval mode it returns a deterministic mask, Louizos' test-time estimate
``clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1)``. The probability that a unit is non-zero,
``sigmoid(log_alpha - beta * log(-l / r))``, is the differentiable expected L0 norm used by the cost model.

One mask is drawn per forward pass and shared by every consumer of the gate: :meth:`mask` caches its draw
until :meth:`clear` is called (the gated wav2vec2 model clears all its gates at the start of each forward).
"""
import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import nn

from ..io.errors import ConfigError

#: Name of the fairseq ``optimizer: composite`` parameter group that gate and Lagrangian parameters join.
PRUNING_PARAM_GROUP = "pruning"
#: ... and the group of the Lagrange multipliers of the sparsity constraint (see criterions/ctc_pruning.py).
LAGRANGIAN_PARAM_GROUP = "lagrangian"


@dataclass(frozen=True)
class GateSettings:
    """The parameters every hard concrete gate of a model is built with; its defaults are the only place the
    defaults of the ``model.gate_*`` options (``gate_temperature``, ``gate_limit_l``, ...) and of
    :class:`HardConcrete` are written. See :class:`HardConcrete` for their meaning."""

    temperature: float = 2.0 / 3.0
    limit_l: float = -0.1
    limit_r: float = 1.1
    init_log_alpha: float = 3.0
    log_alpha_limit: float = 6.0

    @classmethod
    def from_cfg(cls, model_cfg) -> "GateSettings":
        """The settings of a ``wav2vec2_ctc_pruning`` config: its ``gate_{field}`` options."""
        return cls(**{f.name: getattr(model_cfg, f"gate_{f.name}") for f in fields(cls)})

    def make(self, n: int) -> "HardConcrete":
        """A gate over ``n`` units with these settings."""
        return HardConcrete(n, **{f.name: getattr(self, f.name) for f in fields(self)})


#: the defaults of every gate setting
GATE_DEFAULTS = GateSettings()


class HardConcrete(nn.Module):
    """Hard concrete gates over ``n`` units.

    Args:
        n: number of gated units (channels, heads, FFN units, or 1 for a whole block).
        temperature: beta of the binary concrete distribution (2/3 in Louizos et al.).
        limit_l, limit_r: the stretch interval (l, r) = (-0.1, 1.1) in Louizos et al.
        init_log_alpha: initial value of every ``log_alpha``. At the default 3.0 the deterministic mask is
            all ones (nothing pruned) and a training draw is exactly 1 for about 80% of the units.
        log_alpha_limit: :meth:`constrain_` keeps ``log_alpha`` in ``[-limit, limit]`` (0: no limit). Beyond
            about |5| a gate is all but deterministic, while its gradient keeps shrinking: without a limit, gates
            drift so far that the sparsity constraint can no longer move them.
    """

    def __init__(
        self,
        n: int,
        temperature: float = GATE_DEFAULTS.temperature,
        limit_l: float = GATE_DEFAULTS.limit_l,
        limit_r: float = GATE_DEFAULTS.limit_r,
        init_log_alpha: float = GATE_DEFAULTS.init_log_alpha,
        log_alpha_limit: float = GATE_DEFAULTS.log_alpha_limit,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if n <= 0:
            raise ValueError(f"a hard concrete gate needs at least one unit, got n={n}")
        if not (limit_l < 0.0 and limit_r > 1.0):
            raise ConfigError(
                f"gate stretch limits (model.gate_limit_l, gate_limit_r) must satisfy l < 0 < 1 < r, got "
                f"({limit_l}, {limit_r})"
            )
        if temperature <= 0:
            raise ConfigError(f"gate temperature (model.gate_temperature) must be positive, got {temperature}")
        self.n = n
        self.temperature = temperature
        self.limit_l = limit_l
        self.limit_r = limit_r
        self.eps = eps
        self.log_alpha_limit = log_alpha_limit
        self.log_alpha = nn.Parameter(torch.full((n,), float(init_log_alpha)))
        # fairseq's composite optimizer reads this attribute to put the parameter into its own group
        self.log_alpha.param_group = PRUNING_PARAM_GROUP
        self._draw: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return f"n={self.n}, temperature={self.temperature:.4g}, limits=({self.limit_l}, {self.limit_r})"

    def prob_nonzero(self) -> torch.Tensor:
        """P(z_i > 0) for every unit, shape (n,); differentiable in ``log_alpha``. Its sum is E[L0]."""
        shift = self.temperature * math.log(-self.limit_l / self.limit_r)
        return torch.sigmoid(self.log_alpha - shift)

    def sample(self) -> torch.Tensor:
        """A fresh draw of the stochastic mask, shape (n,), values in [0, 1]."""
        u = torch.rand_like(self.log_alpha).clamp(self.eps, 1.0 - self.eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The eval-mode mask, shape (n,): exact 0 when sigmoid(log_alpha) <= -l/(r-l), exact 1 when
        sigmoid(log_alpha) >= (1-l)/(r-l), the stretched sigmoid in between."""
        s = torch.sigmoid(self.log_alpha)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    def mask(self) -> torch.Tensor:
        """The mask for the current forward pass: a cached training draw, or the deterministic mask."""
        if not self.training:
            return self.deterministic()
        if self._draw is None:
            self._draw = self.sample()
        return self._draw

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project ``log_alpha`` back into ``[-log_alpha_limit, log_alpha_limit]`` (after an optimizer step)."""
        if self.log_alpha_limit > 0:
            self.log_alpha.clamp_(-self.log_alpha_limit, self.log_alpha_limit)

    def clear(self) -> None:
        """Forget the cached training draw (call once per forward pass)."""
        self._draw = None

    def forward(self) -> torch.Tensor:
        return self.mask()


def combine(*masks: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Product of the masks that are present (a block gate of shape (1,) broadcasts over unit gates)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out * m
    return out
