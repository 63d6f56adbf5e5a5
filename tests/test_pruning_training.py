"""HJ-Pruning training with fairseq-hydra-train: budgets are met, the Lagrangian behaves, resume and 2-process
training keep gates and multipliers exact."""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from fairseq_prune.criterions.ctc_pruning import CtcPruningCriterion, CtcPruningCriterionConfig
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import (REPO, VENV_BIN, build, criterion_and_batch, finish, hydra_train, hydra_train_command,
                     log_records, start)

BUDGET_RUNS = {
    "hj_macs": ({"": 0.5}, []),
    "hj_size": ({"": 0.5}, []),
    "hj_sep_size": ({"_cnn": 0.5, "_transformer": 0.6}, ["criterion.target_cnn=0.5", "criterion.target_transformer=0.6"]),
}


@pytest.fixture(scope="module")
def budget_runs(tmp_path_factory, small_w2v, noise_data):
    """The three budgets trained at once (one thread each): 1,500 updates, target warm-up over the first 600."""
    root = tmp_path_factory.mktemp("budgets")
    procs = {}
    for config, (_, extra) in BUDGET_RUNS.items():
        cmd = hydra_train_command(config, noise_data, small_w2v, str(root / config), "optimization.max_update=1500",
                                  "criterion.target_warmup_updates=600", "dataset.max_tokens=80000",
                                  "common.log_interval=100", "dataset.validate_interval_updates=1500", *extra)
        procs[config] = start(cmd)
    return {config: finish(p, timeout=1200) for config, p in procs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(BUDGET_RUNS))
def test_budget_is_met_while_ctc_loss_falls(budget_runs, config):
    out = budget_runs[config]
    targets, _ = BUDGET_RUNS[config]
    records = log_records(out, "train_inner")
    first, last = records[0], records[-1]
    assert int(last["num_updates"]) == 1500
    for suffix, target in targets.items():
        assert float(last[f"target{suffix}"]) == target
        assert abs(float(last[f"exp_ratio{suffix}"]) - target) <= 0.03, last
        assert abs(float(last[f"det_ratio{suffix}"]) - target) <= 0.05, last
    assert float(last["ctc_loss"]) < 0.5 * float(first["ctc_loss"])
    closed = sum(int(float(v)) for k, v in last.items() if k.startswith("closed_"))
    assert closed > 0
    valid = log_records(out, "valid")[-1]
    assert "valid_wer" in valid and "valid_det_ratio" + next(iter(targets)) in valid


@pytest.mark.parametrize("target, within", [(1.0, True), (0.7, False)])
def test_best_checkpoint_metric_counts_only_models_within_budget(small_w2v, noise_data, target, within):
    """checkpoint_best is chosen by wer_in_budget: the WER of a model that meets its budget, WER + 1000 + 1000 x
    its excess otherwise (here: all gates open, so a MAC target of 1.0 is met and 0.7 is not)."""
    from fairseq import metrics

    task, model = build(
        Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0, prune_attention_heads=True,
                                 prune_ffn_units=True, apply_mask=False),
        noise_data, task="audio_pruning",
    )
    task.load_dataset("valid")
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(4)])
    crit = CtcPruningCriterion(CtcPruningCriterionConfig(budget="macs", target=target), task)
    _, _, log = task.valid_step(sample, model.eval(), crit)
    assert log["det_within_budget"] == float(within)
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics([log], crit)
    stats = agg.get_smoothed_values()
    assert log["w_total"] > 0 and stats["wer"] > 0
    # out of budget: behind every model within it, and the further over the budget the worse
    over = 0.0 if within else 1.0 - target  # all gates open: the exported model keeps every MAC
    assert log["det_over_budget"] == pytest.approx(over)
    penalty = 0.0 if within else 1000.0 + 1000.0 * over
    assert stats["wer_in_budget"] == pytest.approx(stats["wer"] + penalty, abs=1e-3)


def test_lambda_ascends_while_budget_exceeded_and_descends_below(small_w2v, noise_data):
    # expected MACs start at ~0.99 of the original: a target of 0.5 is exceeded, a target of 1.0 is not
    for target, sign in ((0.5, +1), (1.0, -1)):
        model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=target)
        opt = torch.optim.SGD(crit.parameters(), lr=0.1)
        loss, _, log = crit(model, sample)
        loss.backward()
        before = crit.lambda_1.detach().clone()
        opt.step()
        assert sign * (crit.lambda_1 - before).item() > 0, (target, log["exp_ratio"])
        assert crit.lambda_2.item() > 0  # (s - t)^2 >= 0: lambda_2 only grows


def test_positive_lambda_pushes_every_gate_towards_closing(small_w2v, noise_data):
    grads = {}
    for lam in (0.0, 5.0):
        torch.manual_seed(0)  # same gate draws: the CTC part of the gradient is identical in both runs
        model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5)
        with torch.no_grad():
            crit.lambda_1.fill_(lam)
        loss, _, _ = crit(model, sample)
        loss.backward()
        grads[lam] = torch.cat([g.log_alpha.grad for g in model.w2v_model.gates()])
    assert ((grads[5.0] - grads[0.0]) > 0).all()


def test_lambda_2_init_is_a_quadratic_penalty_from_the_first_update(small_w2v, noise_data):
    torch.manual_seed(0)
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5, lambda_2_init=800.0)
    assert crit.lambda_1.item() == 0.0 and crit.lambda_2.item() == 800.0
    loss, sample_size, log = crit(model, sample)
    gap = log["exp_ratio"] - 0.5
    assert log["reg_loss"] == pytest.approx(800.0 * gap**2 * sample_size, rel=1e-4)
    loss.backward()
    # with lambda_1 still 0 the penalty alone pulls every gate towards closing while the budget is exceeded
    grads = torch.cat([g.log_alpha.grad for g in model.w2v_model.gates()])
    torch.manual_seed(0)
    model0, crit0, _ = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5)
    crit0(model0, sample)[0].backward()
    grads0 = torch.cat([g.log_alpha.grad for g in model0.w2v_model.gates()])
    assert ((grads - grads0) > 0).all()


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(budget="macs", target=1.5), "outside"),
        (dict(budget="size", target=0.0), "outside"),
        (dict(budget="sep_size", target_cnn=0.5), "needs both"),
        (dict(budget="macs", target=0.5, lambda_2_init=-1.0), "lambda_2_init"),
    ],
)
def test_bad_budget_configs_are_refused(small_w2v, noise_data, kw, message):
    with pytest.raises(ValueError, match=message):
        criterion_and_batch(small_w2v, noise_data, **kw)


def test_budget_over_unprunable_groups_is_refused(small_w2v, noise_data):
    task, model = build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, prune_attention_heads=True), noise_data)
    task.load_dataset("train")
    ds = task.dataset("train")
    sample = ds.collater([ds[0], ds[1]])
    crit = CtcPruningCriterion(CtcPruningCriterionConfig(budget="sep_size", target_cnn=0.5, target_transformer=0.5), task)
    with pytest.raises(ValueError, match="prune_conv_channels is false"):
        crit(model, sample)
    crit = CtcPruningCriterion(CtcPruningCriterionConfig(budget="size", target=0.1), task)
    with pytest.raises(ValueError, match="cannot be reached"):
        crit(model, sample)


@pytest.mark.slow
@pytest.mark.parametrize("config,pruned,untouched", [
    ("cnn_only", "conv_channels", ("attention_heads", "ffn_units")),
    ("transformer_only", "attention_heads", ("conv_channels",)),
])
def test_baselines_leave_the_other_part_open(tmp_path, small_w2v, noise_data, config, pruned, untouched):
    target = "criterion.target=0.9" if config == "cnn_only" else "criterion.target=0.6"
    out = hydra_train(config, noise_data, small_w2v, str(tmp_path / "ckpt"), "optimization.max_update=300",
                      "criterion.target_warmup_updates=150", target)
    last = log_records(out, "train_inner")[-1]
    assert float(last[f"closed_{pruned}"]) > 0
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)["model"]
    gated = {k for k in state if k.endswith("log_alpha")}
    marker = {"conv_channels": "channel_gates", "attention_heads": "head_gate", "ffn_units": "ffn_unit_gate"}
    assert any(marker[pruned] in k for k in gated)
    for group in untouched:
        assert f"closed_{group}" not in last
        assert not any(marker[group] in k for k in gated), f"{group} has gates in a {config} run"


def gate_and_lambda_state(path):
    state = torch.load(path, weights_only=False)
    out = {k: v for k, v in state["model"].items() if k.endswith("log_alpha")}
    out.update({f"criterion.{k}": v for k, v in state["criterion"].items()})
    return out, state["optimizer_history"][-1]["num_updates"]


@pytest.mark.slow
def test_resume_continues_the_same_schedule(tmp_path, small_w2v, noise_data):
    """An uninterrupted run vs the same run restarted from its update-30 checkpoint (as after a crash)."""
    common = ["optimization.max_update=60", "criterion.target_warmup_updates=30", "model.mask_prob=0.2",
              "checkpoint.save_interval_updates=30", "checkpoint.no_epoch_checkpoints=false"]
    straight = tmp_path / "straight"
    hydra_train("hj_macs", noise_data, small_w2v, str(straight), *common)
    # the checkpoint written at update 30 (an epoch or an update checkpoint, whichever fairseq chose)
    mid = [f for f in sorted(os.listdir(straight)) if f.endswith(".pt") and "last" not in f and "best" not in f
           and gate_and_lambda_state(straight / f)[1] == 30]
    assert mid, os.listdir(straight)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / mid[0], resumed / "checkpoint_last.pt")
    out = hydra_train("hj_macs", noise_data, small_w2v, str(resumed), *common)
    assert "Loaded checkpoint" in out and "@ 30 updates" in out
    a, na = gate_and_lambda_state(straight / "checkpoint_last.pt")
    b, nb = gate_and_lambda_state(resumed / "checkpoint_last.pt")
    assert na == nb == 60
    assert a.keys() == b.keys() and len(a) > 2
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())
    assert a["criterion.lambda_1"].abs().item() > 0.1  # the multipliers did move


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training_keeps_gates_and_lambdas_identical(tmp_path, small_w2v, noise_data):
    port = free_port()
    save = tmp_path / "ddp"
    procs = []
    for rank in (0, 1):
        cmd = [
            sys.executable, os.path.join(REPO, "tests", "ddp_worker.py"),
            "--config-dir", os.path.join(REPO, "examples", "mini"), "--config-name", "hj_macs",
            f"common.user_dir={REPO}/fairseq_prune", f"task.data={noise_data}", f"model.w2v_path={small_w2v}",
            f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra{rank}", "optimization.max_update=40",
            "criterion.target_warmup_updates=20", "common.log_interval=10",
            "distributed_training.distributed_world_size=2", "distributed_training.distributed_backend=gloo",
            f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
            f"distributed_training.distributed_rank={rank}", "distributed_training.distributed_no_spawn=true",
            "distributed_training.device_id=0", "dataset.train_subset=train", "dataset.valid_subset=valid",
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                   PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-5000:]
    assert "distributed init (rank 1)" in outs[1]
    r0 = torch.load(save / "rank0_params.pt")
    r1 = torch.load(save / "rank1_params.pt")
    keys = [k for k in r0 if k.endswith("log_alpha") or k.startswith("criterion.")]
    assert len(keys) > 3
    for k in keys:
        assert torch.equal(r0[k], r1[k]), k
    assert not torch.equal(r0[keys[0]], torch.full_like(r0[keys[0]], 3.0)), "gates did not train"
    assert r0["criterion.lambda_1"].abs().item() > 0


# ------------------------------------------------------------------------------------------- distillation


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, small_w2v, noise_data) -> str:
    """A dense CTC checkpoint of the same model (random output layer): the distillation teacher."""
    from infer_fixtures import write_ctc_checkpoint

    path = str(tmp_path_factory.mktemp("teacher") / "dense.pt")
    return write_ctc_checkpoint(path, Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, apply_mask=False), noise_data,
                                seed=3)


def test_distillation_adds_the_frame_kl_to_the_teacher(small_w2v, noise_data, teacher):
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5,
                                              distill_teacher=teacher, distill_weight=0.5)
    torch.manual_seed(1)  # the same gate draws here and below
    loss, sample_size, log = crit(model, sample)
    # the KL, computed here from the two models' outputs on the same batch (padded frames left out)
    teacher_model = crit.teacher.model
    torch.manual_seed(1)
    student_out = model(**sample["net_input"])
    with torch.no_grad():
        t = teacher_model.get_normalized_probs(teacher_model(**sample["net_input"]), log_probs=True)
    s = torch.log_softmax(student_out["encoder_out"].float(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    assert student_out["padding_mask"] is not None and student_out["padding_mask"].any()  # a padded batch
    kl = kl.masked_fill(student_out["padding_mask"].t(), 0).sum()
    assert log["distill_loss"] == pytest.approx(kl.item(), rel=1e-4) and kl.item() > 0
    assert log["loss"] == pytest.approx(log["ctc_loss"] + 0.5 * kl.item() + log["reg_loss"], rel=1e-4)
    # the teacher is frozen and not a parameter of the criterion (not trained, not saved with the student)
    assert all(not p.requires_grad for p in teacher_model.parameters())
    assert {n for n, _ in crit.named_parameters()} == {"lambda_1", "lambda_2"}
    assert not any(k.startswith("teacher") for k in crit.state_dict())
    loss.backward()
    assert all(p.grad is None for p in teacher_model.parameters())
    # validation (eval mode) does not distil
    model.eval()
    assert "distill_loss" not in crit(model, sample)[2]


def test_distillation_towards_itself_is_zero(small_w2v, noise_data, tmp_path):
    """A student whose weights are the teacher's, gates open and deterministic, has KL 0 to it."""
    from infer_fixtures import write_ctc_checkpoint

    same = write_ctc_checkpoint(str(tmp_path / "same.pt"), Wav2Vec2CtcPruningConfig(
        w2v_path=small_w2v, apply_mask=False), noise_data, seed=0)
    torch.manual_seed(0)
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5,
                                              distill_teacher=same, distill_weight=1.0)
    state = torch.load(same, weights_only=False)["model"]
    model.load_state_dict(state, strict=False)  # the gates keep their (open) initial values
    for g in model.w2v_model.gates():
        g.eval()  # deterministic masks, ~1 for open gates
    with torch.no_grad():
        for g in model.w2v_model.gates():
            g.log_alpha.fill_(20.0)  # fully open: the mask is exactly 1
    log = crit(model, sample)[2]
    assert log["distill_loss"] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("kw,message", [
    (dict(distill_weight=0.5), "needs both"),
    (dict(distill_teacher="x.pt"), "needs both"),
    (dict(distill_teacher="/nonexistent/teacher.pt", distill_weight=0.5), "/nonexistent/teacher.pt"),
])
def test_bad_distillation_configs_are_refused(small_w2v, noise_data, kw, message):
    with pytest.raises(ValueError, match=message):
        criterion_and_batch(small_w2v, noise_data, budget="macs", target=0.5, **kw)


def test_distillation_in_fairseq_hydra_train(tmp_path, small_w2v, noise_data, teacher):
    """The recipe options reach the criterion; the teacher does not replace the model the budget is checked on."""
    out = hydra_train("hj_macs", noise_data, small_w2v, str(tmp_path / "run"), "optimization.max_update=4",
                      "common.log_interval=1", f"criterion.distill_teacher={teacher}", "criterion.distill_weight=0.3",
                      "dataset.max_tokens=80000", "dataset.validate_interval_updates=4")
    records = log_records(out, "train_inner")
    assert len(records) == 4 and all(float(r["distill_loss"]) > 0 for r in records)
    saved = torch.load(str(tmp_path / "run" / "checkpoint_last.pt"), weights_only=False)
    assert saved["cfg"]["criterion"]["distill_teacher"] == teacher
    assert not any("teacher" in k for k in saved["model"])  # the teacher's weights are not in the student's file
