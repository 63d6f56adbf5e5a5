"""The cost module against fairseq's reference figures, torch's FLOP counter, and the models' own parameters."""
import pytest
import torch
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from experiments.checkpoints import wav2vec2_pretraining_cfg
from fairseq_prune.cost import REFERENCE_SAMPLES, Wav2Vec2Shape, cost_breakdown, group_breakdown, totals
from fairseq_prune.layer_sizes import LayerSizes, parse_conv_layers
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import build

ALL_GATES = dict(prune_conv_channels=True, prune_attention_heads=True, prune_attention_layers=True,
                 prune_ffn_units=True, prune_ffn_layers=True, feature_grad_mult=1.0)
# an uneven per-layer architecture of base size, with one attention block and one FFN block gone entirely
UNEVEN = dict(
    conv_channels=[437, 512, 300, 384, 512, 256, 480],
    attention_heads=[12, 5, 0, 8, 1, 12, 3, 7, 12, 2, 9, 4],
    ffn_units=[3072, 1111, 2048, 0, 512, 3000, 64, 1536, 2500, 800, 3072, 17],
)


def g(x):
    return float(x) / 1e9


def test_parse_conv_layers_without_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_conv_layers("__import__('os').system('true')")


def test_reference_figures_for_wav2vec2_base():
    shape = Wav2Vec2Shape.from_w2v_cfg(OmegaConf.structured(Wav2Vec2Config()))
    parts = cost_breakdown(shape, REFERENCE_SAMPLES)
    groups = group_breakdown(parts)
    assert round(g(totals(parts)["total"].macs), 2) == 74.17
    assert round(g(groups["cnn"].macs), 2) == 24.54
    assert round(g(groups["attention"].macs), 2) == 14.16
    assert round(g(groups["attention_products"].macs), 2) == 4.61
    assert round(g(groups["ffn"].macs), 2) == 28.31
    assert round(g(groups["pos_conv"].macs), 2) == 2.36
    assert round(g(parts["feature_proj"].macs), 2) == 0.20
    assert round(totals(parts)["total"].params / 1e6, 2) == 94.37
    assert round(totals(parts)["cnn"].params / 1e6, 2) == 4.20
    assert abs(totals(parts)["cnn"].macs / totals(parts)["total"].macs - 0.331) < 0.001


def base_model(**kw):
    cfg = Wav2Vec2CtcPruningConfig(w2v_args=wav2vec2_pretraining_cfg({}), **kw)
    _, model = build(cfg, kw.pop("data"))
    return model.eval()


def counted_macs(model, samples: int) -> float:
    """FLOP counter MACs of one utterance + the attention products it cannot see on CPU."""
    x = torch.randn(1, samples)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(source=x, padding_mask=None)
    shape = model.shape()
    products = sum(c.macs for name, c in cost_breakdown(shape, samples).items() if name.endswith("attention_products"))
    return counter.get_total_flops() / 2 + products


@pytest.mark.parametrize("sizes", [{}, UNEVEN], ids=["base", "uneven"])
def test_exact_costs_match_flop_counter_and_parameter_count(noise_data, sizes):
    model = base_model(data=noise_data, **sizes)
    shape = model.shape()
    parts = cost_breakdown(shape, REFERENCE_SAMPLES)
    exact = totals(parts)["total"]
    measured = counted_macs(model, REFERENCE_SAMPLES)
    assert abs(measured - exact.macs) / exact.macs < 0.005, (measured, exact.macs)
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("log_alpha"))
    assert n_params == exact.params
    if sizes:
        assert shape.sizes == LayerSizes(**UNEVEN)
        assert parts["layers.2.attention"].params == 768 and parts["layers.2.attention"].macs == 0  # bias only
        assert parts["layers.3.ffn"].params == 768 and parts["layers.3.ffn"].macs == 0


def test_expected_equals_exact_when_all_gates_are_open(noise_data):
    model = base_model(data=noise_data, **UNEVEN, **ALL_GATES)
    w2v = model.w2v_model
    with torch.no_grad():
        for gate in w2v.gates():
            gate.log_alpha.fill_(50.0)  # P(z > 0) == 1 in float32
    shape = model.shape()
    expected = totals(cost_breakdown(shape, REFERENCE_SAMPLES, w2v.structure_counts("expected")))["total"]
    deterministic = totals(cost_breakdown(shape, REFERENCE_SAMPLES, w2v.structure_counts("deterministic")))["total"]
    exact = totals(cost_breakdown(shape, REFERENCE_SAMPLES))["total"]
    assert float(expected.params) == pytest.approx(exact.params, rel=1e-6)
    assert float(expected.macs) == pytest.approx(exact.macs, rel=1e-6)
    assert deterministic.params == exact.params and deterministic.macs == exact.macs


def test_expected_cost_is_differentiable_and_couples_structures(noise_data):
    model = base_model(data=noise_data, **ALL_GATES)
    w2v = model.w2v_model
    counts = w2v.structure_counts("expected")
    macs = totals(cost_breakdown(model.shape(), REFERENCE_SAMPLES, counts))["total"].macs
    macs.backward()
    grads = [gate.log_alpha.grad for gate in w2v.gates()]
    assert all(gr is not None and (gr > 0).all() for gr in grads), "every gate must lower the expected MACs"
    # coupling: conv layer 3 costs E[in] * E[out] * k * T
    shape = model.shape()
    half = LayerSizes([512, 512, 256, 512, 512, 512, 512], shape.sizes.attention_heads, shape.sizes.ffn_units)
    full, cut = cost_breakdown(shape, REFERENCE_SAMPLES), cost_breakdown(shape, REFERENCE_SAMPLES, half)
    assert cut["conv.2"].macs * 2 == full["conv.2"].macs and cut["conv.3"].macs * 2 == full["conv.3"].macs
