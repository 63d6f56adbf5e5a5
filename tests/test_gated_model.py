"""With its gates open, wav2vec2_ctc_pruning computes what fairseq computes on the same checkpoint, for both model
families (one suite, parametrised by family): fairseq's wav2vec_ctc on wav2vec2 checkpoints, fairseq's HubertCtc
on HuBERT ones; small, large-style, base size, old args-style checkpoints, fine-tuned CTC checkpoints; padded
batches. Then the gated model's own behaviour (keys, refusals, gate groups, closed gates, parameter groups)."""
from typing import Dict, List, Tuple

import pytest
import torch
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig

from experiments.checkpoints import write_wav2vec2_checkpoint
from fairseq_prune.io.checkpoints import CheckpointError
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from fairseq_prune.modules.hard_concrete import HardConcrete
from fairseq_prune.modules.hubert import HUBERT_BASE, write_hubert_checkpoint
from helpers import SMALL_W2V, build, build_gated, padded_batch, root_cfg, save_finetuned
from hubert_fixtures import SMALL_HUBERT, assert_same_hubert_outputs, build_hubert_ctc, write_hubert_ctc_checkpoint

ALL_GATES = dict(
    prune_conv_channels=True,
    prune_attention_heads=True,
    prune_attention_layers=True,
    prune_ffn_units=True,
    prune_ffn_layers=True,
)
LENGTHS = [16000, 11000, 6000]  # a padded batch of different lengths


def fairseq_and_ours(ckpt: str, data: str, **ours_kw):
    torch.manual_seed(0)
    task, ref = build(Wav2Vec2CtcConfig(w2v_path=ckpt, feature_grad_mult=1.0), data)
    _, ours = build(Wav2Vec2CtcPruningConfig(w2v_path=ckpt, feature_grad_mult=1.0, **{**ALL_GATES, **ours_kw}), data)
    if ours.w2v_encoder.proj.weight.data_ptr() != ref.w2v_encoder.proj.weight.data_ptr():
        # a pre-training checkpoint has no output layer: both models initialise one at random
        ours.w2v_encoder.proj.load_state_dict(ref.w2v_encoder.proj.state_dict())
    return task, ref.eval(), ours.eval()


def ctc_logits(model, x, pad):
    with torch.no_grad():
        return model.get_logits(model(source=x, padding_mask=pad))


def assert_same_logits(ref, ours, lengths=LENGTHS, tol=1e-5):
    x, pad = padded_batch(lengths)
    a, b = ctc_logits(ref, x, pad), ctc_logits(ours, x, pad)
    assert a.shape == b.shape
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b)), "padding frames differ"
    assert not finite.all(), "the batch should contain padded frames"
    diff = (a[finite] - b[finite]).abs().max().item()
    assert diff <= tol, f"max abs diff {diff}"
    return a


# ------------------------------------------------------------------------------------ both families, one suite


class Family:
    """How one model family's checkpoints are written, what fairseq builds from them, and what "the same" means:
    wav2vec2 compares the CTC logits; HuBERT the encoder output on every frame and the frame padding mask (its
    rule differs from wav2vec2's conv formula), then the logits of the unpadded frames."""

    name = ""
    small: Dict = {}
    base: Dict = {}
    #: (id, model overrides, task.normalize): large-style checkpoints
    variants: List[Tuple[str, Dict, bool]] = []
    lengths: List[int] = []
    base_lengths: List[int] = []

    def write(self, path: str, overrides: Dict, seed: int, args_style: bool = False, normalize: bool = False):
        raise NotImplementedError

    def reference(self, ckpt: str, data: str, normalize: bool):
        raise NotImplementedError

    def compare(self, ref, ours, lengths=None):
        raise NotImplementedError

    def finetuned(self, path: str, pretrained: str, data: str):
        """Write a fine-tuned CTC checkpoint as fairseq does; returns fairseq's model (eval mode)."""
        raise NotImplementedError

    def fairseq_and_ours(self, ckpt: str, data: str, normalize: bool = False):
        torch.manual_seed(0)
        ref = self.reference(ckpt, data, normalize)
        ours = build_gated(ckpt, data, normalize, **ALL_GATES)
        if ours.w2v_encoder.proj.weight.data_ptr() != ref.w2v_encoder.proj.weight.data_ptr():
            # a pre-training checkpoint has no output layer: both models initialise one at random
            ours.w2v_encoder.proj.load_state_dict(ref.w2v_encoder.proj.state_dict())
        return ref.eval(), ours.eval()


class Wav2Vec2(Family):
    name, small, base, lengths, base_lengths = "wav2vec2", SMALL_W2V, {}, LENGTHS, [24000, 17000]
    variants = [("layer_norm-extractor+pre-LN", dict(extractor_mode="layer_norm", layer_norm_first=True), False),
                ("layer_norm-extractor+conv_bias", dict(extractor_mode="layer_norm", conv_bias=True), False)]

    def write(self, path, overrides, seed, args_style=False, normalize=False):
        write_wav2vec2_checkpoint(path, overrides, seed=seed, args_style=args_style)

    def reference(self, ckpt, data, normalize):
        return build(Wav2Vec2CtcConfig(w2v_path=ckpt, feature_grad_mult=1.0), data)[1]

    def compare(self, ref, ours, lengths=None):
        return assert_same_logits(ref, ours, lengths or self.lengths)

    def finetuned(self, path, pretrained, data):
        return finetuned_ctc_checkpoint(pretrained, data, path)


class Hubert(Family):
    # 6000 and 8000 samples: HuBERT's rule keeps one frame more than wav2vec2's conv formula (19 vs 18, 25 vs 24)
    name, small, base = "hubert", SMALL_HUBERT, HUBERT_BASE
    lengths, base_lengths = [16000, 11000, 8000, 6000], [24000, 17000, 9000]
    variants = [("layer_norm-extractor+pre-LN", dict(extractor_mode="layer_norm", layer_norm_first=True), True),
                ("layer_norm-extractor+conv_bias",
                 dict(extractor_mode="layer_norm", conv_bias=True, required_seq_len_multiple=1), False)]

    def write(self, path, overrides, seed, args_style=False, normalize=False):
        units = 500 if overrides is HUBERT_BASE else 20
        write_hubert_checkpoint(path, overrides, normalize=normalize, seed=seed, args_style=args_style, num_units=units)

    def reference(self, ckpt, data, normalize):
        return build_hubert_ctc(ckpt, data, normalize, feature_grad_mult=1.0)[1]

    def compare(self, ref, ours, lengths=None):
        return assert_same_hubert_outputs(ref, ours, lengths or self.lengths)

    def finetuned(self, path, pretrained, data):
        return write_hubert_ctc_checkpoint(path, pretrained, data)


FAMILIES = [Wav2Vec2(), Hubert()]
VARIANTS = [(f, v) for f in FAMILIES for v in f.variants]


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family_small(request, tmp_path_factory) -> Tuple[Family, str]:
    """(family, its small pre-training checkpoint): the unit tests' shape."""
    family = request.param
    if family.name == "wav2vec2":
        return family, request.getfixturevalue("small_w2v")
    path = str(tmp_path_factory.mktemp("hubert") / "small_hubert.pt")
    family.write(path, family.small, seed=0)
    return family, path


def test_small_checkpoint_gates_open_equals_fairseq(family_small, noise_data):
    family, ckpt = family_small
    ref, ours = family.fairseq_and_ours(ckpt, noise_data)
    assert ours.w2v_model.family == family.name
    assert len(ours.w2v_model.gates()) == 7 + 2 * 4  # 7 conv layers, 4 gates per Transformer layer
    out = family.compare(ref, ours)
    if family.name == "hubert":  # HuBERT's padding rule made the masks equal: the conv formula differs here
        n = torch.tensor(family.lengths)
        conv_rule = super(type(ours.w2v_model), ours.w2v_model)._get_feat_extract_output_lengths(n)
        assert not torch.equal(conv_rule, (~out).sum(-1))


@pytest.mark.parametrize("family,variant", VARIANTS, ids=[f"{f.name}-{v[0]}" for f, v in VARIANTS])
def test_large_style_variants_equal_fairseq(tmp_path, noise_data, family, variant):
    _, overrides, normalize = variant
    ckpt = str(tmp_path / "large_style.pt")
    family.write(ckpt, {**family.small, **overrides}, seed=3, normalize=normalize)
    ref, ours = family.fairseq_and_ours(ckpt, noise_data, normalize)
    family.compare(ref, ours)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_base_size_checkpoint_gates_open_equals_fairseq(tmp_path, noise_data, family):
    ckpt = str(tmp_path / "base.pt")
    family.write(ckpt, family.base, seed=1)  # wav2vec2: fairseq's Wav2Vec2Config defaults, i.e. wav2vec2-base
    ref, ours = family.fairseq_and_ours(ckpt, noise_data)
    assert ours.w2v_model.cfg.encoder_layers == 12 and ours.w2v_model.cfg.encoder_embed_dim == 768
    family.compare(ref, ours, family.base_lengths)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_old_args_style_checkpoint_loads(tmp_path, noise_data, family):
    ckpt = str(tmp_path / "args.pt")
    family.write(ckpt, family.small, seed=2, args_style=True)
    assert "cfg" not in torch.load(ckpt, weights_only=False)
    ref, ours = family.fairseq_and_ours(ckpt, noise_data)
    family.compare(ref, ours)


def test_finetuned_ctc_checkpoint_keeps_encoder_and_output_layer(family_small, noise_data, tmp_path):
    family, pretrained = family_small
    ckpt = str(tmp_path / "ctc.pt")
    ref = family.finetuned(ckpt, pretrained, noise_data)
    ours = build_gated(ckpt, noise_data, **ALL_GATES).eval()
    family.compare(ref, ours)  # output layer included: nothing was copied by hand
    if family.name == "hubert":
        assert torch.load(ckpt, weights_only=False)["cfg"]["model"]["_name"] == "hubert_ctc"
        # the keys are HubertCtc's (less HuBERT's pre-training label embeddings) plus the gates
        ours_keys = {k for k in ours.state_dict() if not k.endswith("log_alpha")}
        assert ours_keys == set(ref.state_dict()) - {"w2v_encoder.w2v_model.label_embs_concat"}


# -------------------------------------------------------------------------------------- the gated model itself


def test_state_dict_keys_are_fairseqs_plus_gates(small_w2v, noise_data):
    _, ref, ours = fairseq_and_ours(small_w2v, noise_data)
    ours_keys = set(ours.state_dict())
    gate_keys = {k for k in ours_keys if k.endswith("log_alpha")}
    assert ours_keys - gate_keys == set(ref.state_dict())
    assert len(gate_keys) == len(ours.w2v_model.gates())


def finetuned_ctc_checkpoint(small_w2v, data, path, model_dc=None):
    """A fine-tuned wav2vec_ctc checkpoint as fairseq writes it (cfg with model.w2v_args, full state dict);
    ``model_dc``: another model config to fine-tune instead (e.g. our dense wav2vec2_ctc_pruning)."""
    torch.manual_seed(5)
    cfg = root_cfg(model_dc or Wav2Vec2CtcConfig(w2v_path=small_w2v, feature_grad_mult=1.0), data)
    from fairseq import tasks

    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)  # fills cfg.model.w2v_args, like fairseq-hydra-train does
    return save_finetuned(model, cfg, path)


def test_dense_pruning_model_checkpoint_is_a_start_point(small_w2v, noise_data, tmp_path):
    # e.g. the dense recipe's result: pruning starts from exactly that model (output layer included)
    ckpt = str(tmp_path / "dense.pt")
    ref = finetuned_ctc_checkpoint(small_w2v, noise_data, ckpt,
                                   Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0))
    _, ours = build(Wav2Vec2CtcPruningConfig(w2v_path=ckpt, feature_grad_mult=1.0, **ALL_GATES), noise_data)
    assert_same_logits(ref, ours.eval())


def test_gated_pruning_checkpoint_is_refused(small_w2v, noise_data, tmp_path):
    # (an exported one is a start point: tests/test_export.py fine-tunes one)
    gated = str(tmp_path / "gated.pt")
    finetuned_ctc_checkpoint(small_w2v, noise_data, gated,
                             Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0, prune_ffn_units=True))
    with pytest.raises(CheckpointError, match="gated.pt: .* holds hard concrete gates .* checkpoint.restore_file"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=gated), noise_data)


def test_finetuned_ctc_checkpoint_with_other_dictionary_is_refused(small_w2v, noise_data, tmp_path):
    ckpt = str(tmp_path / "ctc.pt")
    finetuned_ctc_checkpoint(small_w2v, noise_data, ckpt)
    other = tmp_path / "other"
    other.mkdir()
    (other / "dict.ltr.txt").write_text("".join(f"{c} 1\n" for c in "ABC"))
    with pytest.raises(CheckpointError, match="CTC output layer has .* outputs but the task's target dictionary"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=ckpt, feature_grad_mult=1.0), str(other))


def test_wrong_checkpoint_kinds_are_refused(tmp_path, noise_data):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint file"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=missing), noise_data)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable fairseq checkpoint"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=str(garbage)), noise_data)

    lm = tmp_path / "lm.pt"
    torch.save({"cfg": {"model": {"_name": "transformer_lm"}, "task": {}}, "model": {},
                "optimizer_history": [{"criterion_name": "x", "optimizer_name": "y", "lr_scheduler_state": {},
                                       "num_updates": 0}], "extra_state": {}}, lm)
    with pytest.raises(CheckpointError, match="lm.pt: model.w2v_path needs a wav2vec2 pre-training .* 'transformer_lm'"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=str(lm)), noise_data)


def test_prunable_cnn_with_frozen_cnn_is_refused(small_w2v, noise_data):
    with pytest.raises(ValueError, match="feature_grad_mult"):
        build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=0.0, prune_conv_channels=True), noise_data)


def test_flags_select_gate_groups(small_w2v, noise_data):
    _, cnn_only = build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0, prune_conv_channels=True),
                        noise_data)
    assert set(cnn_only.w2v_model.gates_by_group()) == {"conv_channels"}
    _, trf_only = build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, prune_attention_heads=True, prune_ffn_units=True),
                        noise_data)
    assert set(trf_only.w2v_model.gates_by_group()) == {"attention_heads", "ffn_units"}
    _, none = build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v), noise_data)
    assert none.w2v_model.gates() == []


def test_closed_gates_change_outputs_and_sampling_is_stochastic(small_w2v, noise_data):
    _, ref, ours = fairseq_and_ours(small_w2v, noise_data)
    x, pad = padded_batch(LENGTHS)
    with torch.no_grad():
        ours.w2v_model.feature_extractor.channel_gates[2].log_alpha[:16] = -10.0  # close half of conv layer 2
        ours.w2v_model.encoder_layers()[1].head_gate.log_alpha[0] = -10.0
    closed = ctc_logits(ours, x, pad)
    open_ = ctc_logits(ref, x, pad)
    finite = torch.isfinite(open_)
    assert (closed[finite] - open_[finite]).abs().max() > 1e-3
    ours.train()
    ours.w2v_encoder.apply_mask = False
    with torch.no_grad():
        a = ours.get_logits(ours(source=x, padding_mask=pad))
        b = ours.get_logits(ours(source=x, padding_mask=pad))
    assert (a[finite] - b[finite]).abs().max() > 1e-4, "training-mode masks should be re-drawn every forward"


def test_gate_parameters_join_the_pruning_param_group(small_w2v, noise_data):
    _, ours = build(Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0, **ALL_GATES), noise_data)
    groups = {getattr(p, "param_group", "default") for n, p in ours.named_parameters() if n.endswith("log_alpha")}
    assert groups == {"pruning"}
    assert all(not hasattr(p, "param_group") for n, p in ours.named_parameters() if not n.endswith("log_alpha"))
    assert all(isinstance(g, HardConcrete) for g in ours.w2v_model.gates())
