"""Models and data for the ONNX tests: a noise corpus with SLURP-style labels and an intent inventory, a gated
checkpoint with random gates and the compact model fairseq-prune-export writes from it, fairseq's own
``wav2vec_ctc``, and helpers to load, convert and compare them."""
import json
import os

import pytest
import torch
from fairseq import tasks
from fairseq.data import Dictionary
from omegaconf import OmegaConf

import fairseq_prune  # noqa: F401  (registers our model and task)
from fairseq_prune.cli import export as export_cli
from fairseq_prune.cli import onnx as onnx_cli
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import root_cfg, write_noise_corpus
from infer_fixtures import write_plain_ctc_checkpoint

INTENTS = ["alarm_set", "play_music"]
W2V = "w2v_encoder.w2v_model."


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Noise audio, SLURP-style labels (intent token first), with an intent inventory like manifests/slurp.py's."""
    folder = write_noise_corpus(str(tmp_path_factory.mktemp("onnx-corpus")), {"test": 9}, seed=3, intents=INTENTS)
    with open(os.path.join(folder, "intents.json"), "w") as f:
        json.dump({"intents": INTENTS}, f)
    return folder


def write_gated_checkpoint(path: str, w2v: str, data: str) -> str:
    """A wav2vec2_ctc_pruning checkpoint with random gates: every head of layer 0 and every FFN unit of layer 1
    closed, the other gates drawn in [-3, 3] (some closed, some open, some folded values between 0 and 1)."""
    model_cfg = Wav2Vec2CtcPruningConfig(
        w2v_path=w2v, prune_conv_channels=True, prune_attention_heads=True, prune_ffn_units=True,
        feature_grad_mult=1.0, mask_prob=0.0, mask_channel_prob=0.0,
    )
    cfg = root_cfg(model_cfg, data, task="audio_pruning")
    cfg.criterion = OmegaConf.create({"_name": "ctc", "post_process": "letter"})
    torch.manual_seed(1)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    sd = model.state_dict()
    for k in sd:
        if k.endswith("log_alpha"):
            sd[k].uniform_(-3.0, 3.0)
    sd[W2V + "encoder.layers.0.head_gate.log_alpha"].fill_(-10.0)
    sd[W2V + "encoder.layers.1.ffn_unit_gate.log_alpha"].fill_(-10.0)
    torch.save({
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": sd,
        "optimizer_history": [{"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {}, "num_updates": 0}],
        "extra_state": {}, "last_optimizer_state": None,
    }, path)
    return path


@pytest.fixture(scope="module")
def gated(tmp_path_factory, small_w2v, corpus) -> str:
    return write_gated_checkpoint(str(tmp_path_factory.mktemp("gated") / "gated.pt"), small_w2v, corpus)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, gated) -> str:
    """The compact model fairseq-prune-export writes (a layer without heads, a layer without FFN units)."""
    out = str(tmp_path_factory.mktemp("exported") / "pruned.pt")
    export_cli.main(export_cli.get_parser().parse_args([gated, out]))
    sizes = torch.load(out, weights_only=True)["cfg"]["model"]
    assert sizes["attention_heads"][0] == 0 and sizes["ffn_units"][1] == 0 and min(sizes["conv_channels"]) < 32
    return out


@pytest.fixture(scope="module")
def plain_ctc(tmp_path_factory, small_w2v, corpus) -> str:
    """fairseq's own wav2vec_ctc (fairseq's MultiheadAttention and encoder layers)."""
    return write_plain_ctc_checkpoint(str(tmp_path_factory.mktemp("plain") / "plain.pt"), small_w2v, corpus)


def load(path: str, data: str):
    state = onnx_cli.read_exportable(path)
    return onnx_cli.build_model(path, state, Dictionary.load(os.path.join(data, "dict.ltr.txt")))


def to_onnx(ckpt: str, out: str, *flags: str) -> dict:
    return onnx_cli.main(onnx_cli.get_parser().parse_args([ckpt, out, *flags]))


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(torch.as_tensor(ours)))
    assert (torch.as_tensor(ours)[finite] - ref[finite]).abs().max().item() <= tol
