"""The budgets of HJ-Pruning (``criterion.budget``), one class each: which cost terms a budget holds to its targets,
how the kept sizes (:class:`~fairseq_prune.layer_sizes.LayerSizes`: expected, deterministic or minimal) and their
cost breakdown (:func:`fairseq_prune.cost.totals`) become ratios to the full model, which gate groups it needs,
the suffixes of its log keys and what else it logs. The criterion only iterates over a budget's terms; adding a
budget is adding a class here."""
from typing import Dict, List, Optional, Sequence

from ..cost import Cost, Wav2Vec2Shape
from ..io.errors import ConfigError
from ..layer_sizes import LayerSizes

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

    def setup(self, shape: Wav2Vec2Shape, full: Dict[str, Cost]) -> None:
        """Keep the full model's cost (the ratios' denominators); ``shape``: the full model's."""
        self.full = full

    def ratios(self, cost: Dict[str, Cost], counts: LayerSizes) -> list:
        """Each term's ratio to the full model at the kept sizes ``counts`` whose cost totals are ``cost``
        (tensors where both are expectations under the gates)."""
        raise NotImplementedError

    def check_groups(self, groups: set) -> None:
        """Refuse a model whose gate groups cannot move this budget's terms."""

    def log_values(self, expected: LayerSizes, deterministic: LayerSizes) -> Dict[str, float]:
        """What this budget logs beside the ratios (by default nothing)."""
        return {}


class SizeBudget(Budget):
    """HJ-Pruning-Size: the total parameter count."""

    name = "size"

    def ratios(self, cost, counts):
        return [cost["total"].params / self.full["total"].params]


class MacBudget(Budget):
    """HJ-Pruning-MAC: the total multiply-accumulates at the reference input length."""

    name = "macs"

    def ratios(self, cost, counts):
        return [cost["total"].macs / self.full["total"].macs]


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

    def ratios(self, cost, counts):
        full = self.full
        return [cost["cnn"].params / full["cnn"].params, cost["transformer"].params / full["transformer"].params]

    def check_groups(self, groups: set) -> None:
        if "conv_channels" not in groups:
            raise ConfigError("criterion.budget=sep_size has a CNN target but model.prune_conv_channels is false")
        if not groups & set(TRANSFORMER_GROUPS):
            raise ConfigError(
                "criterion.budget=sep_size has a Transformer target but no Transformer gates "
                "(model.prune_attention_heads / prune_ffn_units / prune_attention_layers / prune_ffn_layers)"
            )


class LatencyBudget(Budget):
    """HJ-Pruning-latency: the time a per-device table (``criterion.latency_table``, made by fairseq-prune-profile)
    predicts for the kept sizes, as a ratio of the dense model's (:mod:`fairseq_prune.latency`)."""

    name = "latency"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if not cfg.latency_table:
            raise ConfigError("criterion.budget=latency needs criterion.latency_table (a table made by "
                              "fairseq-prune-profile for this architecture and the device to prune for)")
        from ..latency import LatencyTable

        self.table = LatencyTable.load(cfg.latency_table)
        self.device = cfg.latency_device

    def setup(self, shape, full) -> None:
        super().setup(shape, full)
        self.table.check(shape, self.device)
        self.dense_ms = float(self.table.predict(shape.sizes))

    def ratios(self, cost, counts):
        return [self.table.predict(counts) / self.dense_ms]

    def log_values(self, expected, deterministic):
        return {"exp_latency_ms": float(self.table.predict(expected)),
                "det_latency_ms": float(self.table.predict(deterministic))}


BUDGETS = {b.name: b for b in (SizeBudget, SepSizeBudget, MacBudget, LatencyBudget)}


def make_budget(cfg) -> Budget:
    """The budget ``cfg.budget`` names, with its targets checked."""
    return BUDGETS[str(cfg.budget)](cfg)
