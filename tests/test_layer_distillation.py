"""Layer-wise distillation while pruning (criterion.distill_layers / distill_layer_weight): the loss is what its
formula says on a padded batch, zero when the student is the teacher, trains the maps with the model; the maps are
criterion state (saved, restored on resume) and never exported."""
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from fairseq_prune.criterions.layer_distillation import HiddenStateMaps, hidden_states
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import SMALL_W2V, criterion_and_batch, hydra_train, log_records
from test_export import assert_same_outputs, export

LAYERS = SMALL_W2V["encoder_layers"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, small_w2v, noise_data) -> str:
    from infer_fixtures import write_ctc_checkpoint

    path = str(tmp_path_factory.mktemp("teacher") / "dense.pt")
    return write_ctc_checkpoint(path, Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, apply_mask=False), noise_data,
                                seed=3)


def _layer_loss(student, teacher, padding, maps):
    """The formula of the module's docstring, written out once more with plain tensor operations."""
    total = 0.0
    for layer, proj in zip(maps.layers, maps.maps):
        s = student[layer - 1] @ proj.weight.t() + proj.bias
        t = teacher[layer - 1]
        per_frame = (s - t).abs().mean(-1) + 1 - (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
        total = total + per_frame.masked_fill(padding.t(), 0).sum()
    return total


def test_layer_loss_is_the_formula_on_a_padded_batch(small_w2v, noise_data, teacher):
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5,
                                              distill_teacher=teacher, distill_layers=[1, LAYERS],
                                              distill_layer_weight=0.25)
    with torch.no_grad():  # maps away from the identity, so that the test sees them
        for m in crit.layer_maps.maps:
            m.weight.add_(0.01 * torch.randn_like(m.weight))
            m.bias.add_(0.01)
    torch.manual_seed(1)
    loss, _, log = crit(model, sample)
    torch.manual_seed(1)  # the same gate draws
    student = model(**sample["net_input"])
    with torch.no_grad():
        t_out = crit.teacher.model(**sample["net_input"])
    padding = student["padding_mask"]
    assert padding is not None and padding.any()
    expected = _layer_loss(hidden_states(student["layer_results"]), hidden_states(t_out["layer_results"]), padding,
                           crit.layer_maps)
    assert log["distill_layer_loss"] == pytest.approx(expected.item(), rel=1e-4) and expected.item() > 0
    assert "distill_loss" not in log  # no output term without distill_weight
    assert log["loss"] == pytest.approx(log["ctc_loss"] + 0.25 * expected.item() + log["reg_loss"], rel=1e-4)
    loss.backward()
    # the maps train (they are criterion parameters in the model's optimizer group), the teacher does not
    names = {n for n, _ in crit.named_parameters()}
    assert names == {"lambda_1", "lambda_2", "layer_maps.maps.0.weight", "layer_maps.maps.0.bias",
                     "layer_maps.maps.1.weight", "layer_maps.maps.1.bias"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crit.layer_maps.parameters())
    assert all(not hasattr(p, "param_group") for p in crit.layer_maps.parameters())  # -> the "default" group
    assert all(p.grad is None for p in crit.teacher.model.parameters())
    model.eval()
    assert "distill_layer_loss" not in crit(model, sample)[2]  # validation does not distil


def test_layer_loss_is_zero_when_the_student_is_the_teacher(small_w2v, noise_data, tmp_path):
    from infer_fixtures import write_ctc_checkpoint

    same = write_ctc_checkpoint(str(tmp_path / "same.pt"), Wav2Vec2CtcPruningConfig(
        w2v_path=small_w2v, apply_mask=False), noise_data, seed=0)
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5,
                                              distill_teacher=same, distill_weight=1.0,
                                              distill_layers=list(range(1, LAYERS + 1)), distill_layer_weight=1.0)
    model.load_state_dict(torch.load(same, weights_only=False)["model"], strict=False)
    with torch.no_grad():
        for g in model.w2v_model.gates():
            g.log_alpha.fill_(20.0)  # fully open: every draw is exactly 1
    log = crit(model, sample)[2]
    assert log["distill_layer_loss"] == pytest.approx(0.0, abs=1e-3)
    assert log["distill_loss"] == pytest.approx(0.0, abs=1e-3)


def test_maps_start_as_the_identity():
    maps = HiddenStateMaps([2, 3], dim=8, num_layers=3)
    x = [torch.randn(5, 2, 8) for _ in range(3)]
    assert torch.equal(maps.maps[0](x[1]), x[1])
    assert maps(x, x, None).item() == pytest.approx(0.0, abs=1e-5)
    y = [h + 0.5 for h in x]
    per_frame = 0.5 + 1 - F.cosine_similarity(x[1], y[1], dim=-1)
    assert maps(x, y, None).item() > per_frame.sum().item() > 0  # layer 3 adds its share


@pytest.mark.parametrize("kw,message", [
    (dict(distill_layers=[1]), "needs both"),
    (dict(distill_layer_weight=0.5), "needs both"),
    (dict(distill_layers=[0], distill_layer_weight=0.5), "from 1 to the model's 2"),
    (dict(distill_layers=[3], distill_layer_weight=0.5), "from 1 to the model's 2"),
    (dict(distill_layers=[1, 1], distill_layer_weight=0.5), "each layer once"),
    (dict(distill_layers=[1], distill_layer_weight=-1.0), "must be >= 0"),
])
def test_bad_layer_distillation_configs_are_refused(small_w2v, noise_data, teacher, kw, message):
    with pytest.raises(ValueError, match=message):
        criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5, distill_teacher=teacher, **kw)


def _maps(path):
    state = torch.load(path, weights_only=False)
    return {k: v for k, v in state["criterion"].items() if k.startswith("layer_maps.")}, \
        state["optimizer_history"][-1]["num_updates"]


@pytest.mark.slow
def test_resume_restores_the_maps_and_export_drops_them(tmp_path, small_w2v, noise_data, teacher):
    """fairseq-hydra-train with layer-wise distillation, uninterrupted vs restarted from its update-10
    checkpoint: the same maps (and gates) at the end. The exported model has no maps and equals the gated one."""
    common = ["optimization.max_update=20", "criterion.target_warmup_updates=10", "checkpoint.save_interval_updates=10",
              "checkpoint.no_epoch_checkpoints=false", "dataset.max_tokens=80000", "common.log_interval=1",
              f"criterion.distill_teacher={teacher}", "criterion.distill_layers=[1,2]",
              "criterion.distill_layer_weight=0.5", "dataset.validate_interval_updates=20"]
    straight = tmp_path / "straight"
    out = hydra_train("hj_macs", noise_data, small_w2v, str(straight), *common)
    assert all(float(r["distill_layer_loss"]) > 0 for r in log_records(out, "train_inner"))
    mid = [f for f in sorted(os.listdir(straight)) if f.endswith(".pt") and "last" not in f and "best" not in f
           and _maps(straight / f)[1] == 10]
    assert mid, os.listdir(straight)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / mid[0], resumed / "checkpoint_last.pt")
    out = hydra_train("hj_macs", noise_data, small_w2v, str(resumed), *common)
    assert "@ 10 updates" in out
    (a, na), (b, nb) = _maps(straight / "checkpoint_last.pt"), _maps(resumed / "checkpoint_last.pt")
    assert na == nb == 20 and len(a) == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    assert not torch.equal(a["layer_maps.maps.0.weight"], torch.eye(a["layer_maps.maps.0.weight"].shape[0]))
    exported = tmp_path / "pruned.pt"
    export(straight / "checkpoint_last.pt", exported)
    state = torch.load(exported, weights_only=False)
    assert not any("layer_maps" in k for k in state["model"]) and not state.get("criterion")
    assert_same_outputs(straight / "checkpoint_last.pt", exported, noise_data)
