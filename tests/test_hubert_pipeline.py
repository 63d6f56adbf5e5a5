"""HuBERT end to end: a mini ``hubert`` checkpoint pruned with HJ-Pruning-MAC by fairseq-hydra-train, exported
(equal to the gated model), decoded by fairseq-prune-infer and fairseq's own infer.py (same hypotheses), and
fine-tuned again from the exported model; the examples/hubert_base recipes compose, build and train; an unsupported
checkpoint stops fairseq-hydra-train with one line."""
import os

import pytest
import torch

from fairseq_prune.modules.hubert import write_hubert_checkpoint
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import REPO, build, hydra_train, hydra_train_command, log_records, run, run_unchecked, write_noise_corpus
from hubert_fixtures import SMALL_HUBERT
from test_export import assert_same_outputs, close_some_gates, load_compact, logits
from test_infer import assert_nontrivial, assert_same_files, fairseq_infer, ours

HUBERT_RECIPES = os.path.join(REPO, "examples", "hubert_base")
METHODS = ("dense", "hj_macs", "hj_size", "hj_sep_size", "cnn_only", "transformer_only")
MAX_TOKENS = 60000  # padded batches when decoding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_noise_corpus(str(tmp_path_factory.mktemp("hubert-corpus")), {"train": 16, "valid": 4, "test": 10})


@pytest.fixture(scope="module")
def mini_hubert(tmp_path_factory) -> str:
    """A mini fairseq ``hubert`` pre-training checkpoint (random weights, fairseq's HubertModel)."""
    path = str(tmp_path_factory.mktemp("mini-hubert") / "hubert_mini.pt")
    write_hubert_checkpoint(path, SMALL_HUBERT, seed=0)
    return path


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, mini_hubert, corpus):
    """HJ-Pruning-MAC (examples/mini) on the mini HuBERT, 6 updates; some gates then closed by hand, exported."""
    root = tmp_path_factory.mktemp("hubert-pruning")
    out = hydra_train("hj_macs", corpus, mini_hubert, str(root / "run"), "optimization.max_update=6")
    gated = close_some_gates(root / "run" / "checkpoint_last.pt", root / "gated.pt")
    exported = root / "exported.pt"
    table = run(["fairseq-prune-export", str(gated), str(exported)], timeout=300).stdout
    return {"log": out, "gated": gated, "exported": exported, "table": table}


@pytest.mark.slow
def test_mini_hubert_pruned_by_hydra_train_and_exported_exactly(pruned, corpus):
    state = torch.load(pruned["gated"], weights_only=False)
    assert state["cfg"]["model"]["_name"] == "wav2vec2_ctc_pruning"
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == "hubert"  # the family travels with the run
    assert "exp_ratio" in pruned["log"] and "det_ratio" in pruned["log"]
    gated, compact = assert_same_outputs(pruned["gated"], pruned["exported"], corpus)  # padded batch, <= 1e-4
    assert gated.w2v_model.family == compact.w2v_model.family == "hubert"
    exported = torch.load(pruned["exported"], weights_only=True)
    assert exported["pruning_summary"]["family"] == "hubert"
    assert exported["pruning_summary"]["after"]["attention_heads"][0] == 0
    assert pruned["table"].startswith("HuBERT encoder; parameters and GMACs for 10 s of audio")


@pytest.mark.slow
def test_exported_hubert_model_decodes_alike_in_both_decoders(tmp_path, pruned, corpus):
    fs = str(tmp_path / "fairseq")
    fairseq_infer(str(pruned["exported"]), corpus, fs, f"dataset.max_tokens={MAX_TOKENS}")
    mine = str(tmp_path / "ours")
    ours(str(pruned["exported"]), corpus, mine, "--max-tokens", str(MAX_TOKENS))
    assert_same_files(mine, fs)
    assert_nontrivial(mine)
    from_gated = str(tmp_path / "gated")  # the exported model's hypotheses are the gated checkpoint's
    ours(str(pruned["gated"]), corpus, from_gated, "--max-tokens", str(MAX_TOKENS))
    assert_same_files(from_gated, mine)


@pytest.mark.slow
def test_exported_hubert_model_is_a_start_point(pruned, corpus):
    """model.w2v_path = the exported HuBERT-family model: the same model (HuBERT's padding rule included)."""
    exported = load_compact(pruned["exported"], corpus)
    _, start = build(Wav2Vec2CtcPruningConfig(w2v_path=str(pruned["exported"])), corpus)
    assert start.w2v_model.family == "hubert"
    assert torch.equal(logits(start.eval()), logits(exported))


def compose_recipe(method: str, data: str, w2v: str):
    """examples/hubert_base/{method}.yaml composed as fairseq-hydra-train composes it (fairseq's schema matched
    to the primary config, the plugin's dataclass defaults added)."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import fairseq_prune  # noqa: F401 (registers the model, task and criterion, as common.user_dir does)

    hydra_init(method)
    with initialize_config_dir(config_dir=HUBERT_RECIPES, version_base="1.1"):
        cfg = compose(config_name=method, overrides=[f"task.data={data}", f"model.w2v_path={w2v}"])
    add_defaults(cfg)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


@pytest.mark.parametrize("method", METHODS)
def test_hubert_base_recipes_compose_and_build(method, mini_hubert, corpus):
    from fairseq import tasks

    cfg = compose_recipe(method, corpus, mini_hubert)
    m = cfg.model
    assert m._name == "wav2vec2_ctc_pruning" and cfg.task._name == "audio_pruning"
    # fairseq's HuBERT base_10h.yaml, where the pruning recipes keep it
    assert (m.mask_prob, m.mask_channel_prob, m.mask_channel_length, m.layerdrop) == (0.75, 0.5, 64, 0.1)
    assert (m.dropout, m.attention_dropout, m.activation_dropout, cfg.common.seed) == (0.0, 0.0, 0.1, 1337)
    assert m.feature_grad_mult == 1.0 and m.freeze_finetune_updates == 0
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    assert model.w2v_model.family == "hubert"
    criterion = task.build_criterion(cfg.criterion)  # audio_pruning checks the budget can be reached
    groups = set(model.w2v_model.gates_by_group())
    expected = {"dense": set(), "cnn_only": {"conv_channels"}, "transformer_only": {"attention_heads", "ffn_units"}}
    assert groups == expected.get(method, {"conv_channels", "attention_heads", "ffn_units"})
    if method == "dense":
        assert cfg.criterion._name == "ctc" and cfg.optimization.lr == [2e-5]
    else:
        assert type(criterion).__name__ == "CtcPruningCriterion"
        assert cfg.optimizer.groups.default.lr_float == 2e-5
        assert list(cfg.optimizer.groups.default.lr_scheduler.phase_ratio) == [0.1, 0.0, 0.9]


@pytest.mark.slow
def test_hubert_base_hj_macs_recipe_trains(tmp_path, mini_hubert, corpus):
    """The recipe as it is, on CPU for 3 updates: only the GPU and cluster settings are overridden, and the
    channel-mask length (64, the whole width of the mini model's 64-dim encoder; 768 at base size)."""
    save = tmp_path / "run"
    cmd = hydra_train_command("hj_macs", corpus, mini_hubert, str(save), "common.cpu=true", "common.fp16=false",
                              "model.mask_channel_length=8",
                              "distributed_training.distributed_world_size=1", "dataset.num_workers=0",
                              "dataset.max_tokens=100000", "optimization.max_update=3", "optimization.update_freq=[1]",
                              "common.log_interval=1")
    cmd[cmd.index("--config-dir") + 1] = HUBERT_RECIPES
    p = run(cmd, timeout=600)
    assert [int(r["num_updates"]) for r in log_records(p.stdout + p.stderr, "train_inner")] == [1, 2, 3]
    state = torch.load(save / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == "hubert"
    assert any(k.endswith("channel_gates.0.log_alpha") for k in state["model"])


@pytest.mark.slow
def test_unsupported_checkpoint_stops_hydra_train_in_one_line(tmp_path, corpus):
    lm = tmp_path / "lm.pt"
    torch.save({"cfg": {"model": {"_name": "transformer_lm"}, "task": {}}, "model": {},
                "optimizer_history": [{"criterion_name": "x", "optimizer_name": "y", "lr_scheduler_state": {},
                                       "num_updates": 0}], "extra_state": {}}, lm)
    p = run_unchecked(hydra_train_command("hj_macs", corpus, str(lm), str(tmp_path / "run")), timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        f"fairseq-prune: error: {lm}: model.w2v_path needs a wav2vec2 pre-training or fine-tuned CTC checkpoint, "
        "or a HuBERT one (fairseq model wav2vec2, wav2vec_ctc, hubert, hubert_ctc, or a wav2vec2_ctc_pruning one "
        "without gates); this one holds model 'transformer_lm'"
    )
