"""fairseq-hydra-train finds and trains wav2vec2_ctc_pruning through --user-dir (common.user_dir)."""
import json
import os

import pytest
import torch

from helpers import REPO, run

FAIRSEQ_FT_CONFIGS = os.path.join(
    os.path.dirname(__import__("fairseq").__file__), "examples", "wav2vec", "config", "finetuning"
)


def train_log_records(stdout: str, kind: str):
    out = []
    for line in stdout.splitlines():
        if f"[{kind}][INFO] - {{" in line:
            out.append(json.loads(line.split(" - ", 1)[1]))
    return out


@pytest.mark.slow
def test_stock_fairseq_recipe_trains_our_model(tmp_path, small_w2v, noise_data):
    save = tmp_path / "ckpt"
    p = run(
        [
            "fairseq-hydra-train",
            "--config-dir", FAIRSEQ_FT_CONFIGS,
            "--config-name", "base_10m",
            f"common.user_dir={REPO}/fairseq_prune",
            f"task.data={noise_data}",
            f"model.w2v_path={small_w2v}",
            "model._name=wav2vec2_ctc_pruning",
            "+model.prune_attention_heads=true",
            "+model.prune_ffn_units=true",
            "common.cpu=true", "common.fp16=false", "common.log_interval=1", "common.log_format=json",
            "distributed_training.distributed_world_size=1", "dataset.num_workers=0",
            "model.freeze_finetune_updates=0", "dataset.max_tokens=100000", "model.mask_channel_prob=0",
            "model.mask_prob=0.1", "+model.mask_length=2", "dataset.required_batch_size_multiple=1",
            "optimization.max_update=4", "dataset.valid_subset=valid", "dataset.validate_after_updates=0",
            "dataset.validate_interval_updates=2", f"checkpoint.save_dir={save}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        timeout=300,
    )
    log = p.stdout + p.stderr
    updates = train_log_records(log, "train_inner")
    assert [int(r["num_updates"]) for r in updates] == [1, 2, 3, 4]
    assert all(float(r["loss"]) > 0 for r in updates)
    assert train_log_records(log, "valid"), "validation did not run"
    state = torch.load(save / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["model"]["_name"] == "wav2vec2_ctc_pruning"
    assert state["cfg"]["criterion"]["_name"] == "ctc" and state["cfg"]["task"]["_name"] == "audio_finetuning"
    assert any(k.endswith("head_gate.log_alpha") for k in state["model"])
    # the pre-training config travels with the checkpoint (w2v_path is not needed to load it again)
    assert state["cfg"]["model"]["w2v_args"]["model"]["encoder_layers"] == 2
