"""fairseq_prune.criterions.budgets: each budget's terms, ratios and log-key suffixes; bad targets refused."""
from types import SimpleNamespace

import pytest

from fairseq_prune.cost import Cost
from fairseq_prune.criterions.budgets import BUDGETS, make_budget

FULL = {"total": Cost(100.0, 1000.0), "cnn": Cost(10.0, 400.0), "transformer": Cost(90.0, 600.0)}
HALF = {"total": Cost(60.0, 500.0), "cnn": Cost(5.0, 300.0), "transformer": Cost(55.0, 200.0)}


def cfg(**kw):
    return SimpleNamespace(**{"budget": "macs", "target": 0.5, "target_cnn": None, "target_transformer": None, **kw})


@pytest.mark.parametrize("name, ratios, suffixes", [
    ("size", [0.6], [""]),
    ("macs", [0.5], [""]),
    ("sep_size", [0.5, 55 / 90], ["_cnn", "_transformer"]),
])
def test_terms_ratios_and_log_suffixes(name, ratios, suffixes):
    b = make_budget(cfg(budget=name, target_cnn=0.4, target_transformer=0.7))
    b.setup(None, FULL)
    assert b.ratios(HALF, None) == pytest.approx(ratios)
    assert b.log_suffixes == suffixes and len(b.targets) == len(b.terms) == len(ratios)
    assert b.targets == ([0.4, 0.7] if name == "sep_size" else [0.5])


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match=r"criterion.target=1.5 is outside \(0, 1\]"):
        make_budget(cfg(target=1.5))
    with pytest.raises(ValueError, match="needs both criterion.target_cnn and criterion.target_transformer"):
        make_budget(cfg(budget="sep_size", target_cnn=0.5))
    with pytest.raises(ValueError, match="prune_conv_channels is false"):
        make_budget(cfg(budget="sep_size", target_cnn=0.5, target_transformer=0.5)).check_groups({"ffn_units"})
    assert sorted(BUDGETS) == ["latency", "macs", "sep_size", "size"]
    with pytest.raises(ValueError, match="budget=latency needs criterion.latency_table"):
        make_budget(cfg(budget="latency", latency_table="", latency_device=""))
