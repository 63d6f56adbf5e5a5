"""ONNX: the export-only traceable forward equals fairseq's; ``fairseq-prune-onnx`` writes models that onnxruntime
runs with PyTorch's outputs (≤ 1e-4) and decodes alone from their metadata, at mini and wav2vec2-base size; bad
input is one clear line and writes nothing."""
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary
from fairseq.data.data_utils import post_process

pytest.importorskip("onnxruntime", reason="the ONNX path needs pip install -e '.[onnx]'")
pytest.importorskip("onnx", reason="the ONNX path needs pip install -e '.[onnx]'")

from experiments.checkpoints import wav2vec2_pretraining_cfg  # noqa: E402
from fairseq_prune.cli import onnx as onnx_cli  # noqa: E402
from fairseq_prune.text import greedy_units  # noqa: E402
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning  # noqa: E402
from fairseq_prune.onnx.export import (  # noqa: E402
    OnnxSpec, TraceableCtc, check_onnx, export_onnx, random_padded_batch, reference_emissions,
)
from fairseq_prune.onnx.runtime import OnnxCtcModel  # noqa: E402
from helpers import SMALL_W2V  # noqa: E402
from onnx_fixtures import (  # noqa: E402,F401  (fixtures)
    INTENTS, assert_close, corpus, exported, gated, load, plain_ctc, to_onnx,
)

#: lengths (samples) of the equality checks: 23457, 13001, 6001 and 401 are not multiples of the 320-sample stride;
#: 401 gives a single frame
BATCHES = [(16000,), (23457,), (31999, 12345, 6001), (401, 16000)]


# ---------------------------------------------------------------------------------------------------------------
# the traceable equivalent, in PyTorch


def layer_norm_variant() -> Wav2Vec2CtcPruning:
    """extractor_mode=layer_norm, pre-LayerNorm Transformer, a blank weight: the branches the others miss."""
    w2v_args = wav2vec2_pretraining_cfg(dict(SMALL_W2V, extractor_mode="layer_norm", layer_norm_first=True,
                                             conv_bias=True))
    torch.manual_seed(2)
    model = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, 30, attention_heads=[2, 0], ffn_units=[0, 40],
                                             blank_weight=0.7, blank_mode="add")
    return model.eval()


def hubert_variant() -> Wav2Vec2CtcPruning:
    """A model of the ``hubert`` family (what a HuBERT checkpoint as model.w2v_path gives): HuBERT's frame padding
    rule; uneven per-layer sizes."""
    from omegaconf import open_dict

    w2v_args = wav2vec2_pretraining_cfg(SMALL_W2V)
    with open_dict(w2v_args):
        w2v_args.model._name = "hubert"
    torch.manual_seed(3)
    model = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, 30, attention_heads=[1, 3], ffn_units=[64, 8]).eval()
    assert model.w2v_model.family == "hubert"
    return model


VARIANTS = {"layer_norm": layer_norm_variant, "hubert": hubert_variant}


@pytest.mark.parametrize("which", ["exported", "plain_ctc", "layer_norm", "hubert"])
@pytest.mark.parametrize("log_probs", [True, False])
def test_traceable_forward_equals_fairseq(which, log_probs, request, corpus):
    """TraceableCtc (what is exported) computes fairseq's get_logits(model(...)) on padded and unpadded batches,
    frame lengths included, for our compact model, fairseq's own wav2vec_ctc, a layer_norm/pre-LN model and a
    model of the hubert family."""
    model = VARIANTS[which]() if which in VARIANTS else load(request.getfixturevalue(which), corpus)
    traceable = TraceableCtc(model, log_probs).eval()
    for i, lengths in enumerate(BATCHES):
        source, padding_mask = random_padded_batch(lengths, i)
        with torch.no_grad():
            ref = reference_emissions(model, source, padding_mask, log_probs)
            ours, frames = traceable(source, padding_mask)
            assert_close(ours, ref, 1e-5)
            assert torch.equal(frames, torch.isfinite(ref[..., 1]).long().sum(-1))
            if len(set(lengths)) == 1:  # no padding-mask input: fairseq's padding_mask=None
                ours, frames = traceable(source, None)
                assert_close(ours, reference_emissions(model, source, None, log_probs), 1e-5)
                assert frames.tolist() == [ref.shape[1]] * len(lengths)


def test_export_leaves_the_model_unchanged(plain_ctc, corpus):
    """Tracing for export neither changes the weights (weight norm stays) nor the mode or the outputs."""
    model = load(plain_ctc, corpus)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source, padding_mask = random_padded_batch((12000, 7000), 0)
    out_before = reference_emissions(model, source, padding_mask, True)
    export_onnx(model, OnnxSpec(), {"k": "v"})
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and any(k.endswith("weight_g") for k in after)
    assert torch.equal(out_before, reference_emissions(model, source, padding_mask, True))


# ---------------------------------------------------------------------------------------------------------------
# fairseq-prune-onnx


def test_exported_model_to_onnx(tmp_path, exported, corpus):
    """The compact model's ONNX file: onnxruntime's outputs equal PyTorch's on new lengths and padded batches,
    the metadata holds the dictionary and intents, and the file is complete and readable."""
    out = tmp_path / "pruned.onnx"
    result = to_onnx(exported, str(out))
    assert result["max_abs_diff"] <= 1e-4 and (20000, 13001, 6001) in result["batches"]
    assert sorted(os.listdir(tmp_path)) == ["pruned.onnx"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask

    onnx_model = OnnxCtcModel(str(out), threads=1)
    model = load(exported, corpus)
    for i, lengths in enumerate(BATCHES):
        source, padding_mask = random_padded_batch(lengths, 100 + i)
        scores, frames = onnx_model.emissions(source.numpy(), padding_mask.numpy())
        ref = reference_emissions(model, source, padding_mask, log_probs=True)
        assert_close(torch.from_numpy(scores), ref, 1e-4)
        assert frames.tolist() == torch.isfinite(ref[..., 1]).sum(-1).tolist()

    meta = onnx_model.meta
    dictionary = Dictionary.load(os.path.join(corpus, "dict.ltr.txt"))
    assert meta.symbols == dictionary.symbols and onnx_model.dictionary.symbols == dictionary.symbols
    assert meta.intents == INTENTS and meta.model == "wav2vec2_ctc_pruning" and meta.log_probs
    assert meta.post_process == "letter" and meta.labels == "ltr" and meta.blank_index == 0
    assert meta.fairseq_task["_name"] == "audio_pruning" and meta.padding_mask_input


@pytest.mark.parametrize("which", sorted(VARIANTS))
def test_variants_to_onnx(which, tmp_path):
    """The layer_norm/pre-LN and hubert-family models pass the ONNX check (padded batch included)."""
    model = VARIANTS[which]()
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(export_onnx(model, OnnxSpec(), {}))
    report = check_onnx(path, model, OnnxSpec())
    assert report.max_abs_diff <= 1e-4 and (20000, 13001, 6001) in report.batches


def test_plain_wav2vec_ctc_logits_without_padding_mask(tmp_path, plain_ctc, corpus):
    """fairseq's wav2vec_ctc, logits out, no padding-mask input: equal outputs on unpadded batches of any size;
    a padded batch is refused with a message saying why."""
    out = tmp_path / "plain.onnx"
    result = to_onnx(plain_ctc, str(out), "--output", "logits", "--no-padding-mask")
    assert all(len(set(b)) == 1 for b in result["batches"]) and (8000, 8000) in result["batches"]
    onnx_model = OnnxCtcModel(str(out))
    assert onnx_model.session.get_outputs()[0].name == "logits" and not onnx_model.has_padding_mask
    model = load(plain_ctc, corpus)
    for lengths in [(27777,), (9001, 9001, 9001)]:
        source, _ = random_padded_batch(lengths, 7)
        scores, frames = onnx_model.emissions(source.numpy())
        assert_close(torch.from_numpy(scores), reference_emissions(model, source, None, log_probs=False), 1e-4)
        assert frames.tolist() == [scores.shape[1]] * len(lengths)
    source, padding_mask = random_padded_batch((9000, 5000), 0)
    with pytest.raises(ValueError, match="without a padding-mask input"):
        onnx_model.emissions(source.numpy(), padding_mask.numpy())


def test_onnx_file_alone_transcribes_like_pytorch(tmp_path, exported, corpus):
    """Copied into an empty folder, the ONNX file decodes a padded batch with its own metadata only, into the
    words PyTorch's greedy decoding gives with the manifest's dictionary."""
    out = tmp_path / "built" / "pruned.onnx"
    out.parent.mkdir()
    to_onnx(exported, str(out))
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(out, alone)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype("float32") * 0.1 for n in (24000, 17777, 9000)]
    words = OnnxCtcModel(str(alone)).transcribe(waves)

    model = load(exported, corpus)
    dictionary = Dictionary.load(os.path.join(corpus, "dict.ltr.txt"))
    source, padding_mask = random_padded_batch([len(w) for w in waves], 0)
    for i, w in enumerate(waves):
        source[i, : len(w)] = torch.from_numpy(w)
    ref = reference_emissions(model, source, padding_mask, log_probs=False)
    units = greedy_units(ref, torch.isfinite(ref[..., 1]).sum(-1), blank=0)
    expected = [post_process(dictionary.string(torch.LongTensor(u)), "letter") for u in units]
    assert words == expected and sum(bool(w) for w in words) >= 2, (words, expected)


BAD = {
    # name: (arguments after the checkpoint, given the output folder and the corpus; parts of the one error line)
    "existing file": (lambda o, c: [str(o / "exists.onnx")], ["exists.onnx exists", "--force"]),
    "missing dict": (lambda o, c: [str(o / "m.onnx"), "--dict", str(o / "d.txt")], ["d.txt", "not found (--dict)"]),
    "other dict": (lambda o, c: [str(o / "m.onnx"), "--dict", _swapped_dict(c, o.parent)],
                   ["swapped.txt: not the dictionary", "pruned.pt was exported with"]),
}


def _swapped_dict(corpus: str, folder) -> str:
    """The corpus dictionary with its first two units swapped."""
    lines = open(os.path.join(corpus, "dict.ltr.txt")).read().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (folder / "swapped.txt").write_text("\n".join(lines) + "\n")
    return str(folder / "swapped.txt")


@pytest.mark.parametrize("case", sorted(BAD) + ["gated checkpoint", "failed check"])
def test_bad_input_one_clear_error(case, tmp_path, exported, gated, corpus, monkeypatch, capsys):
    """One ``fairseq-prune-onnx: error:`` line naming the file, exit status 2, nothing written or changed."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "exists.onnx").write_bytes(b"keep me")
    if case == "gated checkpoint":
        args, expected = [gated, str(out / "m.onnx")], ["gated.pt", "hard concrete gates", "fairseq-prune-export"]
    elif case == "failed check":  # PyTorch's reference moved by 1e-3: the check must refuse the file
        import fairseq_prune.onnx.export as onnx_export

        real = onnx_export.reference_emissions
        monkeypatch.setattr(onnx_export, "reference_emissions", lambda *a, **k: real(*a, **k) + 1e-3)
        args, expected = [exported, str(out / "m.onnx")], ["differs from PyTorch's by 1.00e-03", "1e-04"]
    else:
        make, expected = BAD[case]
        args = [exported, *make(out, corpus)]
    with pytest.raises(SystemExit) as e:
        onnx_cli.cli_main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fairseq-prune-onnx: error: "), err
    for part in expected:
        assert part in err[0], (part, err[0])
    assert sorted(os.listdir(out)) == ["exists.onnx"] and (out / "exists.onnx").read_bytes() == b"keep me"


def load_benchmark(name: str):
    """A script of benchmarks/ as a module, loaded from its file (benchmarks/ is not a package)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_base_size_pruned_model(tmp_path):
    """wav2vec2-base with random gates at half the MACs, exported as the inference benchmark builds it: the ONNX
    file passes the check and onnxruntime's greedy hypotheses on a padded batch are PyTorch's."""
    bench = load_benchmark("bench_inference")
    from fairseq_prune.export.prune import prune
    from fairseq_prune.onnx.metadata import OnnxMetadata
    from helpers import LETTERS

    torch.manual_seed(0)
    gated = Wav2Vec2CtcPruning.from_w2v_args(wav2vec2_pretraining_cfg({}), bench.VOCAB, **bench.ALL_GATES).eval()
    bench.set_gates(gated, bench.counts_for_budget(gated, 0.5, "uneven", seed=1), seed=2)
    model = prune(gated, gated.cfg, round_to=8).model.eval()
    del gated
    assert len(set(model.shape().sizes.attention_heads)) > 1 and model.shape().sizes.conv_channels[0] < 512
    symbols = Dictionary().symbols + LETTERS
    assert len(symbols) == bench.VOCAB
    meta = OnnxMetadata("wav2vec2_ctc_pruning", "bench", True, True, symbols)
    path = str(tmp_path / "base.onnx")
    with open(path, "wb") as f:
        f.write(export_onnx(model, OnnxSpec(), meta.to_props()))
    report = check_onnx(path, model, OnnxSpec())
    assert report.max_abs_diff <= 1e-4 and len(report.batches) == 4

    source, padding_mask = random_padded_batch((32000, 25111, 11000), 5)
    scores, frames = OnnxCtcModel(path).emissions(source.numpy(), padding_mask.numpy())
    ref = reference_emissions(model, source, padding_mask, log_probs=True)
    assert_close(torch.from_numpy(scores), ref, 1e-4)
    ours = greedy_units(torch.from_numpy(scores), torch.from_numpy(frames), blank=0)
    theirs = greedy_units(ref, torch.isfinite(ref[..., 1]).sum(-1), blank=0)
    assert ours == theirs and all(len(u) > 10 for u in ours)


def test_missing_folders_are_made_as_export_makes_them_and_removed_when_it_fails(tmp_path, exported, monkeypatch,
                                                                                  capsys):
    """fairseq-prune-onnx and fairseq-prune-export agree: OUTPUT's missing folders are created; a failed export
    leaves none of them behind."""
    import fairseq_prune.onnx.export as onnx_export

    out = tmp_path / "a" / "b" / "m.onnx"
    onnx_cli.cli_main([exported, str(out)])
    assert out.is_file()
    real = onnx_export.reference_emissions
    monkeypatch.setattr(onnx_export, "reference_emissions", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(SystemExit):
        onnx_cli.cli_main([exported, str(tmp_path / "c" / "d" / "m.onnx")])
    assert not (tmp_path / "c").exists()

