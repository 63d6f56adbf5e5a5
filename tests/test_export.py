"""fairseq-prune-export: the compact model computes what the gated model computes in eval mode, is as small as the
table says, loads with fairseq's loader, and bad input is refused clearly."""
import json
import os
import stat

import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_prune  # noqa: F401 (registers the model for fairseq's loader)
from experiments.checkpoints import write_wav2vec2_checkpoint
from fairseq_prune.io.checkpoints import PER_LAYER_SIZES, CheckpointError
from fairseq_prune.export.prune import load_gated, prune
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from fairseq_prune.layer_sizes import is_gate_key
from helpers import SMALL_W2V, build, hydra_train, padded_batch, run

GATES = "w2v_encoder.w2v_model."


def trained(tmp_path, noise_data, w2v, config, *extra):
    save = tmp_path / f"train-{config}"
    hydra_train(config, noise_data, w2v, str(save), "optimization.max_update=20",
                "criterion.target_warmup_updates=10", *extra)
    return save / "checkpoint_last.pt"


def close_some_gates(ckpt, out):
    """Make the export non-trivial: every head of layer 0 and every FFN unit of layer 1 closed, conv channels
    closed in two layers (the last included), and gate values strictly between 0 and 1 that must be folded."""
    state = torch.load(ckpt, weights_only=False)
    sd = state["model"]
    sd[GATES + "encoder.layers.0.head_gate.log_alpha"].fill_(-10.0)
    sd[GATES + "encoder.layers.1.ffn_unit_gate.log_alpha"].fill_(-10.0)
    for layer in (2, 6):
        la = sd[GATES + f"feature_extractor.channel_gates.{layer}.log_alpha"]
        la[:6] = torch.tensor([-10.0, 0.5, -1.0, 1.0, -10.0, 0.0])  # 0.5, 1.0, 0.0 give masks in (0, 1)
    sd[GATES + "encoder.layers.1.head_gate.log_alpha"][0] = 0.3
    sd[GATES + "encoder.layers.0.ffn_unit_gate.log_alpha"][:10] = torch.linspace(-3.0, 1.0, 10)
    torch.save(state, out)
    return out


def export(src, dst, *flags):
    p = run(["fairseq-prune-export", str(src), str(dst), *flags], timeout=300)
    return p.stdout


def logits(model, lengths=(16000, 11000, 7000)):
    x, pad = padded_batch(list(lengths))
    with torch.no_grad():
        return model.get_logits(model(source=x, padding_mask=pad))


def load_compact(path, data):
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": data})
    return models[0].eval()


def assert_same_outputs(gated_ckpt, exported_ckpt, data, tol=1e-4):
    _, gated = load_gated(str(gated_ckpt))
    compact = load_compact(exported_ckpt, data)
    a, b = logits(gated), logits(compact)
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b)) and not finite.all()
    diff = (a[finite] - b[finite]).abs().max().item()
    assert diff <= tol, diff
    return gated, compact


BUDGETS = {
    "hj_macs": (),
    "hj_size": ("+model.prune_attention_layers=true", "+model.prune_ffn_layers=true"),
    "hj_sep_size": (),
}


@pytest.fixture(scope="module", params=sorted(BUDGETS))
def exported(request, tmp_path_factory, small_w2v, noise_data):
    """A gated checkpoint trained with each budget, gates closed by :func:`close_some_gates`, exported with
    ``--summary-json`` and ``--plot`` (into a folder export makes): the paths, the printed table, the summary."""
    tmp_path = tmp_path_factory.mktemp(f"export-{request.param}")
    src = close_some_gates(trained(tmp_path, noise_data, small_w2v, request.param, *BUDGETS[request.param]),
                           tmp_path / "gated.pt")
    out, plot, summary = tmp_path / "exported.pt", tmp_path / "plots" / "arch.png", tmp_path / "summary.json"
    table = export(src, out, "--summary-json", str(summary), "--plot", str(plot))
    return dict(src=src, out=out, plot=plot, table=table, summary=json.loads(summary.read_text()))


@pytest.mark.slow
def test_exported_model_equals_gated_model(exported, noise_data):
    assert_same_outputs(exported["src"], exported["out"], noise_data)


@pytest.mark.slow
def test_closed_heads_units_and_channels_are_removed(exported, noise_data):
    after = exported["summary"]["after"]
    assert after["attention_heads"][0] == 0 and after["ffn_units"][1] == 0
    assert after["conv_channels"][2] < 32 and after["conv_channels"][6] < 32
    compact = load_compact(exported["out"], noise_data)
    assert compact.w2v_model.encoder_layers()[0].self_attn.q_proj is None  # the block is gone, not zeroed
    assert compact.w2v_model.encoder_layers()[1].fc1 is None


@pytest.mark.slow
def test_exported_model_has_no_gates(exported, noise_data):
    assert not any("log_alpha" in k for k in load_compact(exported["out"], noise_data).state_dict())
    model_cfg = torch.load(exported["out"], weights_only=True)["cfg"]["model"]
    assert not any(model_cfg[f] for f in ("prune_conv_channels", "prune_attention_heads", "prune_ffn_units"))


@pytest.mark.slow
def test_summary_and_table_count_the_exported_parameters(exported, noise_data):
    n_params = sum(p.numel() for p in load_compact(exported["out"], noise_data).parameters())
    assert n_params == exported["summary"]["after"]["params"]
    assert f"{n_params / 1e6:.3f}M parameters" in exported["table"]
    assert "total" in exported["table"] and "ratio after/before" in exported["table"]


@pytest.mark.slow
def test_checkpoint_stores_sizes_and_summary_in_plain_containers(exported):
    state = torch.load(exported["out"], weights_only=True)  # plain containers only: loads without trusting pickles
    after = exported["summary"]["after"]
    assert state["cfg"]["model"]["_name"] == "wav2vec2_ctc_pruning"
    assert {k: state["cfg"]["model"][k] for k in PER_LAYER_SIZES} == {k: after[k] for k in PER_LAYER_SIZES}
    assert state["pruning_summary"]["after"]["macs"] < state["pruning_summary"]["before"]["macs"]


@pytest.mark.slow
def test_outputs_are_written_atomically_with_open_permissions(exported):
    assert exported["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # its folder was made
    umask = os.umask(0)
    os.umask(umask)
    for written in (exported["out"], exported["plot"]):  # the permissions open() would give
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask, written


@pytest.mark.slow
def test_exported_model_fine_tunes_as_it_is(tmp_path, small_w2v, noise_data):
    """model.w2v_path = an exported model and a recipe without gates (dense): the run builds the exported
    per-layer sizes, starts from exactly the exported model and writes compact checkpoints that load alone."""
    src = close_some_gates(trained(tmp_path, noise_data, small_w2v, "hj_macs"), tmp_path / "gated.pt")
    out = tmp_path / "exported.pt"
    export(src, out)
    sizes = {k: torch.load(out, weights_only=True)["cfg"]["model"][k] for k in PER_LAYER_SIZES}
    exported = load_compact(out, noise_data)

    _, start = build(Wav2Vec2CtcPruningConfig(w2v_path=str(out)), noise_data)
    assert torch.equal(logits(start.eval()), logits(exported))  # same model, padding included
    assert sum(p.numel() for p in start.parameters()) == sum(p.numel() for p in exported.parameters())

    save = tmp_path / "finetuned"
    hydra_train("dense", noise_data, str(out), str(save), "optimization.max_update=4")
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)
    assert {k: state["cfg"]["model"][k] for k in PER_LAYER_SIZES} == sizes
    assert not any(is_gate_key(k) for k in state["model"])
    tuned = load_compact(save / "checkpoint_last.pt", noise_data)  # no w2v_path needed to load it
    assert [p.shape for p in tuned.parameters()] == [p.shape for p in exported.parameters()]
    assert not torch.equal(logits(tuned), logits(exported))  # it trained

    with pytest.raises(CheckpointError, match=r"exported.pt: an exported \(pruned\) model cannot be pruned again"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=str(out), prune_ffn_units=True), noise_data)
    other = [n + 1 for n in sizes["ffn_units"]]
    with pytest.raises(CheckpointError, match=rf"exported with model.ffn_units=\{sizes['ffn_units']}, but this run"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=str(out), ffn_units=other), noise_data)


@pytest.mark.slow
def test_large_style_model_exports_exactly(tmp_path, noise_data):
    """extractor_mode=layer_norm (LayerNorm across channels in every conv block) and pre-LN Transformer."""
    w2v = str(tmp_path / "large_style.pt")
    write_wav2vec2_checkpoint(w2v, {**SMALL_W2V, "extractor_mode": "layer_norm", "layer_norm_first": True}, seed=4)
    src = close_some_gates(trained(tmp_path, noise_data, w2v, "hj_macs"), tmp_path / "gated.pt")
    out = tmp_path / "exported.pt"
    export(src, out)
    assert_same_outputs(src, out, noise_data)


@pytest.mark.slow
def test_round_to_keeps_outputs_and_reports_its_cost(tmp_path, small_w2v, noise_data):
    src = close_some_gates(trained(tmp_path, noise_data, small_w2v, "hj_macs"), tmp_path / "gated.pt")
    plain, rounded = tmp_path / "plain.pt", tmp_path / "rounded.pt"
    export(src, plain)
    table = export(src, rounded, "--round-to", "8")
    assert "--round-to 8:" in table
    _, compact = assert_same_outputs(src, rounded, noise_data)
    sizes = torch.load(rounded, weights_only=True)["pruning_summary"]["after"]
    exact = torch.load(plain, weights_only=True)["pruning_summary"]["after"]
    # default extractor: conv layers 0..5 and FFN units are rounded; the last conv layer feeds a LayerNorm
    assert all(c % 8 == 0 for c in sizes["conv_channels"][:-1])
    assert all(u % 8 == 0 for u in sizes["ffn_units"])
    assert sizes["conv_channels"][-1] == exact["conv_channels"][-1]
    assert sizes["macs"] > exact["macs"]


def test_block_gates_alone_cover_every_unit(small_w2v, noise_data):
    """prune_attention_layers / prune_ffn_layers without unit gates: the one block gate value scales every head
    and unit, in the gated model and in its export (nothing is removed)."""
    cfg = Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, prune_attention_layers=True, prune_ffn_layers=True)
    _, model = build(cfg, noise_data)
    with torch.no_grad():
        for layer in model.w2v_model.encoder_layers():
            layer.attn_layer_gate.log_alpha.fill_(0.3)
            layer.ffn_layer_gate.log_alpha.fill_(-0.5)
    model.eval()
    compact = prune(model, model.cfg).model
    assert compact.w2v_model.layer_sizes() == model.w2v_model.layer_sizes()
    a, b = logits(model), logits(compact)
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b)) and (a[finite] - b[finite]).abs().max().item() <= 1e-4


def test_bad_input_is_refused_clearly(tmp_path, small_w2v, noise_data):
    missing = tmp_path / "nope.pt"
    with pytest.raises(AssertionError, match="nope.pt: no such checkpoint file"):
        export(missing, tmp_path / "out.pt")
    # a wav2vec2 pre-training checkpoint: not trained with our model
    with pytest.raises(AssertionError, match="not trained with model wav2vec2_ctc_pruning .*'wav2vec2'"):
        export(small_w2v, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    # an existing output is never overwritten without --force
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep me")
    with pytest.raises(AssertionError, match="existing.pt exists; pass --force"):
        export(small_w2v, existing)
    assert existing.read_bytes() == b"keep me"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")], "a temporary file was left behind"
