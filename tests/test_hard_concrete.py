import math

import torch

from fairseq_prune.modules.hard_concrete import HardConcrete, combine


def spread_gate(n=64):
    g = HardConcrete(n)
    with torch.no_grad():
        g.log_alpha.copy_(torch.linspace(-4, 4, n))
    return g


def test_sampled_masks_lie_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    g = spread_gate().train()
    draws = torch.stack([g.sample() for _ in range(200)])
    assert draws.min() >= 0 and draws.max() <= 1
    assert (draws == 0).float().mean() > 0.05
    assert (draws == 1).float().mean() > 0.05
    assert ((draws > 0) & (draws < 1)).any()


def test_expected_l0_follows_closed_form_and_matches_sampling():
    torch.manual_seed(0)
    g = spread_gate(16)
    beta, l, r = 2 / 3, -0.1, 1.1
    closed = torch.sigmoid(g.log_alpha - beta * math.log(-l / r))
    assert torch.allclose(g.prob_nonzero(), closed)
    freq = torch.stack([g.sample() > 0 for _ in range(20000)]).float().mean(0)
    assert (freq - closed).abs().max() < 0.015


def test_eval_mask_is_deterministic_and_follows_louizos_estimate():
    g = spread_gate().eval()
    a, b = g.mask(), g.mask()
    assert torch.equal(a, b)
    expect = (torch.sigmoid(g.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(a, expect)
    assert (a == 0).any() and (a == 1).any()
    assert torch.equal(HardConcrete(8).eval().mask(), torch.ones(8)), "default init must leave every unit open"


def test_gradients_reach_log_alpha():
    g = spread_gate(8).train()
    (g.mask() * torch.arange(8.0)).sum().backward()
    assert g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
    g.zero_grad()
    g.prob_nonzero().sum().backward()
    assert (g.log_alpha.grad > 0).all()


def test_one_draw_per_forward_until_cleared():
    torch.manual_seed(0)
    g = spread_gate().train()
    first = g.mask()
    assert g.mask() is first
    g.clear()
    assert not torch.equal(g.mask(), first)


def test_combine_multiplies_present_masks():
    assert combine(None, None) is None
    a = torch.tensor([0.5, 1.0])
    assert torch.equal(combine(a, None), a)
    assert torch.equal(combine(a, torch.tensor([0.5])), torch.tensor([0.25, 0.5]))
