"""Faults and bad input in fairseq-hydra-train runs: refusals are one line and come before fairseq writes anything
into save_dir; a damaged checkpoint_last.pt (a copy killed half-way) does not stop a resume."""
import os
import shutil

import pytest
import torch

from fairseq_prune.io.checkpoints import CheckpointError, checkpoint_damage, read_checkpoint
from fairseq_prune.io.resume import resume_cfg
from helpers import hydra_train, hydra_train_command, run_unchecked

PREFIX = "fairseq-prune: error: "


def refused(noise_data, w2v, save_dir, *overrides, env=None) -> str:
    """An hj_macs run that must fail; returns its last stderr line after checking that nothing else was said about
    it: no traceback, no hydra hint, exit status 1."""
    p = run_unchecked(hydra_train_command("hj_macs", noise_data, w2v, str(save_dir), *overrides), timeout=300,
                      env=env)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    if env is None:
        assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
        assert "HYDRA_FULL_ERROR" not in p.stderr
    return p.stderr.strip().splitlines()[-1]


def checkpoints_in(folder) -> list:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
                  if n.endswith(".pt"))


@pytest.mark.slow
def test_unreachable_target_is_refused_before_training(tmp_path, small_w2v, noise_data):
    """Only FFN gates cannot bring the MACs to half: refused when the criterion is built, so fairseq writes no
    crash.pt (15 MB for a base model) and no checkpoint."""
    save = tmp_path / "run"
    line = refused(noise_data, small_w2v, save, "model.prune_conv_channels=false",
                   "model.prune_attention_heads=false", "criterion.target=0.5")
    assert line.startswith(PREFIX + "criterion target 0.5 for the macs budget cannot be reached: with the "
                           "prunable groups ['ffn_units'] the smallest possible ratio is 0."), line
    assert checkpoints_in(save) == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["target outside (0, 1]", "w2v_path of random bytes", "truncated w2v_path"])
def test_refusals_are_one_line(tmp_path, small_w2v, noise_data, case):
    w2v, overrides = small_w2v, []
    if case == "target outside (0, 1]":
        overrides, expected = ["criterion.target=1.5"], "criterion.target=1.5 is outside (0, 1]"
    elif case == "w2v_path of random bytes":
        w2v = str(tmp_path / "garbage.pt")
        open(w2v, "wb").write(bytes(range(256)) * 8)
        expected = f"{w2v}: not a readable fairseq checkpoint (UnpicklingError: Unsupported operand 0)"
    else:
        w2v = str(tmp_path / "half.pt")
        data = open(small_w2v, "rb").read()
        open(w2v, "wb").write(data[: len(data) // 2])
        expected = f"{w2v}: not a readable fairseq checkpoint (truncated: {len(data) // 2} bytes, the end of its zip"
    line = refused(noise_data, w2v, tmp_path / "run", *overrides)
    assert line.startswith(PREFIX + expected), line
    assert checkpoints_in(tmp_path / "run") == []


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback(tmp_path, small_w2v, noise_data):
    p = run_unchecked(hydra_train_command("hj_macs", noise_data, small_w2v, str(tmp_path / "run"),
                                          "criterion.target=1.5"), timeout=300, env={"HYDRA_FULL_ERROR": "1"})
    assert p.returncode == 1 and "Traceback" in p.stderr
    assert "ConfigError: criterion.target=1.5 is outside (0, 1]" in p.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_resume_from_an_empty_checkpoint_last_uses_the_newest_intact_one(tmp_path, small_w2v, noise_data):
    """A kill -9 during fairseq's copy to checkpoint_last.pt leaves it empty: the resumed run continues from the
    checkpoint that copy was made from, and says so in one line."""
    save = tmp_path / "run"
    common = ["dataset.max_tokens=80000", "checkpoint.save_interval_updates=10", "dataset.validate_interval_updates=10"]
    hydra_train("hj_macs", noise_data, small_w2v, str(save), "optimization.max_update=20", *common)
    last = save / "checkpoint_last.pt"
    open(last, "wb").close()
    out = hydra_train("hj_macs", noise_data, small_w2v, str(save), "optimization.max_update=30", *common)
    notes = [line for line in out.splitlines() if "is damaged" in line]
    assert len(notes) == 1, out[-3000:]
    assert notes[0].endswith(f"{last} is damaged (empty: 0 bytes), as an interrupted copy leaves it; resuming from "
                             f"{save / 'checkpoint_best.pt'}, the newest intact checkpoint in {save}")
    assert f"Loaded checkpoint {save / 'checkpoint_best.pt'} (epoch" in out and "@ 20 updates)" in out
    assert torch.load(last, weights_only=False)["optimizer_history"][-1]["num_updates"] == 30


@pytest.mark.slow
def test_resume_without_an_intact_checkpoint_is_one_line(tmp_path, small_w2v, noise_data):
    save = tmp_path / "run"
    save.mkdir()
    (save / "checkpoint_last.pt").write_bytes(b"")
    line = refused(noise_data, small_w2v, save)
    assert line == (f"{PREFIX}{save / 'checkpoint_last.pt'} is damaged (empty: 0 bytes), as an interrupted copy "
                    f"leaves it, and {save} holds no intact checkpoint*.pt to resume from instead: remove it to start "
                    "the run afresh")
    assert checkpoints_in(save) == ["checkpoint_last.pt"] and (save / "checkpoint_last.pt").stat().st_size == 0


def test_resume_cfg_skips_truncated_checkpoints(tmp_path, small_w2v):
    """checkpoint_last.pt cut in the middle (an interrupted copy), a newer checkpoint cut too, an older intact one:
    the intact one is chosen; an intact checkpoint_last.pt or an explicit restore_file changes nothing."""
    from fairseq.dataclass.configs import CheckpointConfig
    from omegaconf import OmegaConf

    data = open(small_w2v, "rb").read()
    shutil.copy(small_w2v, tmp_path / "checkpoint_1_10.pt")
    for name in ("checkpoint_2_20.pt", "checkpoint_last.pt"):
        (tmp_path / name).write_bytes(data[: len(data) - 100])
    os.utime(tmp_path / "checkpoint_1_10.pt", (1, 1))  # the oldest
    assert checkpoint_damage(str(tmp_path / "checkpoint_last.pt")).startswith("truncated: ")
    assert checkpoint_damage(small_w2v) is None
    cfg = OmegaConf.structured(CheckpointConfig(save_dir=str(tmp_path)))
    assert resume_cfg(cfg).restore_file == str(tmp_path / "checkpoint_1_10.pt")
    assert cfg.restore_file == "checkpoint_last.pt"  # fairseq's config is not changed, a copy is
    explicit = OmegaConf.structured(CheckpointConfig(save_dir=str(tmp_path), restore_file="/x/model.pt"))
    assert resume_cfg(explicit) is explicit
    shutil.copy(small_w2v, tmp_path / "checkpoint_last.pt")
    assert resume_cfg(cfg) is cfg


def test_unreadable_checkpoint_errors_are_one_line(tmp_path, small_w2v):
    """torch's 7-line weights-only message shortened to the unpickler's complaint; a file naming an unknown class."""
    import pickle

    path = tmp_path / "foreign.pt"
    torch.save({"model": {}, "x": pickle.PickleError()}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(path))
    assert "\n" not in str(e.value)
    assert str(e.value) == (f"{path}: not a readable fairseq checkpoint (UnpicklingError: Unsupported global: GLOBAL "
                            "pickle.PickleError was not an allowed global by default)")
