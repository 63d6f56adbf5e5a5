"""What only HuBERT has: its frame padding rule, HuBERT-base and -large costs against torch's FLOP counter, HuBERT
checkpoints the gates do not cover refused in one line. (That the gated model with its gates open computes what
fairseq's HubertCtc computes is the HuBERT half of tests/test_gated_model.py's family-parametrised suite.)"""
import dataclasses

import pytest
import torch
from fairseq.models.hubert.hubert import HubertModel
from torch.utils.flop_counter import FlopCounterMode

from fairseq_prune.io.checkpoints import CheckpointError, save_atomic
from fairseq_prune.export.report import format_cost, format_table
from fairseq_prune.cost import REFERENCE_SAMPLES, cost_breakdown, group_breakdown, totals
from fairseq_prune.export.prune import prune
from fairseq_prune.modules.hubert import (
    HUBERT_BASE,
    HUBERT_LARGE,
    hubert_as_wav2vec2,
    hubert_frame_lengths,
    hubert_pretraining_cfg,
    write_hubert_checkpoint,
)
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning
from helpers import build_gated
from hubert_fixtures import SMALL_HUBERT

ALL_GATES = dict(prune_conv_channels=True, prune_attention_heads=True, prune_attention_layers=True,
                 prune_ffn_units=True, prune_ffn_layers=True)


def test_hubert_frame_padding_rule_is_hubert_models():
    """hubert_frame_lengths against HubertModel.forward_padding_mask itself, on end-padded masks."""
    g = torch.Generator().manual_seed(0)
    shape = hubert_model("small").shape()
    for num_samples in (16000, 12345, 23457, 401):
        num_frames = shape.conv_frames(num_samples)[-1]
        lengths = torch.cat([torch.tensor([num_samples, 1]), torch.randint(1, num_samples, (30,), generator=g)])
        pad = torch.arange(num_samples)[None, :] >= lengths[:, None]
        features = torch.zeros(len(lengths), num_frames, 1)
        theirs = HubertModel.forward_padding_mask(None, features, pad)
        assert torch.equal(hubert_frame_lengths(lengths, num_samples, num_frames), (~theirs).sum(-1)), num_samples


def test_unsupported_checkpoints_are_refused_in_one_line(tmp_path, noise_data):
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.model = OmegaConf.structured(Wav2VecConfig(conv_feature_layers="[(32, 10, 5), (32, 8, 4)]",
                                                       conv_aggregator_layers="[(32, 3, 1)]"))
        cfg.model._name = "wav2vec"
        cfg.task = OmegaConf.create({"_name": "audio_pretraining", "data": ""})
        cfg.criterion = OmegaConf.create({"_name": "wav2vec", "infonce": False})  # model.infonce reads it
    w2v1 = str(tmp_path / "wav2vec_large.pt")
    save_atomic({"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                 "model": Wav2VecModel(cfg.model).state_dict(),
                 "optimizer_history": [{"criterion_name": "x", "optimizer_name": "y", "lr_scheduler_state": {},
                                        "num_updates": 0}], "extra_state": {}}, w2v1)
    with pytest.raises(CheckpointError) as e:
        build_gated(w2v1, noise_data)
    message = str(e.value)
    assert "\n" not in message and message.startswith(w2v1)
    assert "(fairseq model wav2vec2, wav2vec_ctc, hubert, hubert_ctc, or a wav2vec2_ctc_pruning one without " \
           "gates); this one holds model 'wav2vec'" in message

    batch_norm = str(tmp_path / "bn.pt")
    write_hubert_checkpoint(batch_norm, {**SMALL_HUBERT, "conv_pos_batch_norm": True})
    with pytest.raises(CheckpointError, match="bn.pt: this HuBERT model has a batch-normed positional convolution"):
        build_gated(batch_norm, noise_data)


def hubert_model(size: str, vocab=None, **fields) -> Wav2Vec2CtcPruning:
    """wav2vec2_ctc_pruning on fairseq's HuBERT-base or -large config, or the tests' small one (random weights; a
    CTC output layer of ``vocab`` units, or none)."""
    preset = {"small": SMALL_HUBERT, "base": HUBERT_BASE, "large": HUBERT_LARGE}[size]
    w2v_args = hubert_as_wav2vec2("", hubert_pretraining_cfg(preset, normalize=size == "large"), None)
    return Wav2Vec2CtcPruning.from_w2v_args(w2v_args, vocab, **fields).eval()


def test_hubert_base_cost_table_matches_flop_counter_and_parameters():
    """fairseq-prune-export's table for HuBERT-base at 10 s (README): the same shapes as wav2vec2-base, so the same
    figures; checked against torch's FLOP counter and the parameters of the model (32 output letters)."""
    model = hubert_model("base", vocab=32, **ALL_GATES, feature_grad_mult=1.0)
    assert model.w2v_model.family == "hubert"
    parts = cost_breakdown(model.shape(), REFERENCE_SAMPLES)
    exact = totals(parts)["total"]
    encoder = cost_breakdown(dataclasses.replace(model.shape(), vocab_size=0), REFERENCE_SAMPLES)
    groups = group_breakdown(encoder)
    assert round(totals(encoder)["total"].macs / 1e9, 2) == 74.17
    assert round(totals(encoder)["total"].params / 1e6, 2) == 94.37
    assert round(groups["cnn"].macs / 1e9, 2) == 24.54 and round(groups["ffn"].macs / 1e9, 2) == 28.31
    x = torch.randn(1, REFERENCE_SAMPLES)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(source=x, padding_mask=None)
    products = sum(c.macs for name, c in parts.items() if name.endswith("attention_products"))
    measured = counter.get_total_flops() / 2 + products  # the counter cannot see CPU attention products
    assert abs(measured - exact.macs) / exact.macs < 0.005, (measured, exact.macs)
    assert sum(p.numel() for n, p in model.named_parameters() if not n.endswith("log_alpha")) == exact.params

    table = format_table(prune(model, model.cfg))
    assert table.startswith("HuBERT encoder; parameters and GMACs for 10 s of audio\n")
    assert f"  {'total':<18} {format_cost(exact)}  ->  {format_cost(exact)}" in table  # all gates open: nothing removed
    assert "  cnn                   4.200M   24.539G" in table and "  ffn                  56.669M   28.312G" in table


def test_hubert_large_costs_match_parameters_and_flop_counter():
    model = hubert_model("large")
    parts = cost_breakdown(model.shape(), 16000)  # 1 s: the counter's check, cheaper than 10 s at this size
    exact = totals(parts)["total"]
    assert sum(p.numel() for p in model.parameters()) == exact.params
    assert round(totals(cost_breakdown(model.shape(), REFERENCE_SAMPLES))["total"].params / 1e6, 1) == 315.4
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(source=torch.randn(1, 16000), padding_mask=None)
    products = sum(c.macs for name, c in parts.items() if name.endswith("attention_products"))
    assert abs(counter.get_total_flops() / 2 + products - exact.macs) / exact.macs < 0.005
