"""The budgets of HJ-Pruning (``criterion.budget``), one class each: which cost terms a budget holds to its targets,
how a cost breakdown (:func:`fairseq_prune.cost.totals`: expected, deterministic or minimal) becomes their
ratios to the full model, which gate groups it needs, and the suffixes of its log keys. The criterion only
iterates over a budget's terms; adding a budget is adding a class here."""
from typing import Dict, List, Optional, Sequence

from ..cost import Cost
from ..errors import ConfigError

#: gate groups of the Transformer (the CNN's is ``conv_channels``)
TRANSFORMER_GROUPS = ("attention_heads", "attention_layers", "ffn_units", "ffn_layers")


def _check_target(name: str, value: Optional[float]) -> float:
    if value is None:
        raise ConfigError(f"criterion.{name} is required for this budget")
    if not (0.0 < value <= 1.0):
        raise ConfigError(f"criterion.{name}={value} is outside (0, 1]")
    return float(value)


class Budget:
    """Cost terms held to final ``targets`` (ratios to the full model, in (0, 1])."""

    #: ``criterion.budget``'s value
    name = ""
    #: the criterion options that give the targets, one per term
    target_options: Sequence[str] = ("target",)

    def __init__(self, cfg) -> None:
        self.targets: List[float] = [_check_target(o, getattr(cfg, o)) for o in self.target_options]

    @property
    def terms(self) -> List[str]:
        """The terms' names (a one-term budget is named after itself)."""
        return [self.name]

    @property
    def log_suffixes(self) -> List[str]:
        """Suffix of each term's log keys (``target``, ``exp_ratio``, ``lambda_1``, ...): none for one term."""
        return [""] if len(self.terms) == 1 else [f"_{t}" for t in self.terms]

    def ratios(self, cost: Dict[str, Cost], full: Dict[str, Cost]) -> list:
        """Each term's ratio of ``cost`` to ``full`` (tensors where ``cost`` is an expectation under the gates)."""
        raise NotImplementedError

    def check_groups(self, groups: set) -> None:
        """Refuse a model whose gate groups cannot move this budget's terms."""


class SizeBudget(Budget):
    """HJ-Pruning-Size: the total parameter count."""

    name = "size"

    def ratios(self, cost, full):
        return [cost["total"].params / full["total"].params]


class MacBudget(Budget):
    """HJ-Pruning-MAC: the total multiply-accumulates at the reference input length."""

    name = "macs"

    def ratios(self, cost, full):
        return [cost["total"].macs / full["total"].macs]


class SepSizeBudget(Budget):
    """HJ-Pruning-SepSize: CNN and Transformer parameters, each with its own target."""

    name = "sep_size"
    target_options = ("target_cnn", "target_transformer")

    def __init__(self, cfg) -> None:
        if cfg.target_cnn is None or cfg.target_transformer is None:
            raise ConfigError(
                "criterion.budget=sep_size needs both criterion.target_cnn and criterion.target_transformer"
            )
        super().__init__(cfg)

    @property
    def terms(self) -> List[str]:
        return ["cnn", "transformer"]

    def ratios(self, cost, full):
        return [cost["cnn"].params / full["cnn"].params, cost["transformer"].params / full["transformer"].params]

    def check_groups(self, groups: set) -> None:
        if "conv_channels" not in groups:
            raise ConfigError("criterion.budget=sep_size has a CNN target but model.prune_conv_channels is false")
        if not groups & set(TRANSFORMER_GROUPS):
            raise ConfigError(
                "criterion.budget=sep_size has a Transformer target but no Transformer gates "
                "(model.prune_attention_heads / prune_ffn_units / prune_attention_layers / prune_ffn_layers)"
            )


BUDGETS = {b.name: b for b in (SizeBudget, SepSizeBudget, MacBudget)}


def make_budget(cfg) -> Budget:
    """The budget ``cfg.budget`` names, with its targets checked."""
    return BUDGETS[str(cfg.budget)](cfg)
