"""Bad input content to fairseq-prune-infer (issue 28, items 5-7), for both backends and every batch size: audio
that cannot be decoded (NaN or infinite samples, fewer samples than the model's receptive field) is refused by its
manifest line, or skipped with a warning and counted under --skip-bad-audio, never decoded from padding; label
symbols the dictionary lacks are named in a warning (refused under --strict-labels); a dictionary that does not
fit the checkpoint is refused (its size) or named in a warning (its order), for every checkpoint kind."""
import importlib.util
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import fairseq_prune  # noqa: F401  (registers our model, task and safe globals)
from fairseq_prune.cli.infer import cli_main as infer_main
from fairseq_prune.layer_sizes import parse_conv_layers, receptive_field
from helpers import SMALL_W2V, copy_manifest
from infer_fixtures import read_result_file, read_summary, write_plain_ctc_checkpoint

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
ONNX = pytest.param("onnxruntime", marks=pytest.mark.skipif(not HAVE_ONNX, reason="needs pip install -e '.[onnx]'"))
W2V_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory, plain_ctc) -> str:
    from fairseq_prune.cli import onnx as onnx_cli

    out = str(tmp_path_factory.mktemp("onnx") / "plain.onnx")
    onnx_cli.main(onnx_cli.get_parser().parse_args([plain_ctc, out]))
    return out


def model_for(backend: str, plain_ctc: str, request) -> str:
    return request.getfixturevalue("plain_onnx") if backend == "onnxruntime" else plain_ctc


def argv(data, ckpt, results, *args, backend="pytorch"):
    return [str(data), "--path", str(ckpt), "--results-path", str(results), "--cpu", "--quiet", "--backend", backend,
            *map(str, args)]


def infer_fails(capsys, *args, **kw) -> str:
    """fairseq-prune-infer in this process, expected to fail: its one error line (no traceback before it)."""
    with pytest.raises(SystemExit) as e:
        infer_main(argv(*args, **kw))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("fairseq-prune-infer: error: "), err[-3000:]
    return last[len("fairseq-prune-infer: error: "):]


def warnings_of(capsys) -> list:
    return [line.split(" | ", 3)[-1] for line in capsys.readouterr().err.splitlines() if "| WARNING |" in line]


def put_audio(data: str, index: int, samples: np.ndarray) -> str:
    """Replace the audio of manifest entry ``index`` (tsv line ``index + 2``) by ``samples`` (a float WAV, which
    can hold NaN); returns its path."""
    tsv = os.path.join(data, "test.tsv")
    lines = open(tsv).readlines()
    path = os.path.join(data, f"bad{index}.wav")
    sf.write(path, samples.astype("float32"), 16000, subtype="FLOAT")
    lines[index + 1] = f"bad{index}.wav\t{len(samples)}\n"
    open(tsv, "w").writelines(lines)
    return path


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype("float32") * 0.1


def with_nan(n: int, value: float = float("nan")) -> np.ndarray:
    x = noise(n)
    x[n // 2] = value
    return x


# ---------------------------------------------------------------------------------------------------------------
# item 5: audio content


def shortest_input(layers) -> int:
    """The fewest samples a conv stack of these (dim, kernel, stride) runs on, found by trying."""
    convs = torch.nn.Sequential(*[torch.nn.Conv1d(1, 1, k, s) for _, k, s in layers])
    for n in range(1, 2000):
        try:
            convs(torch.zeros(1, 1, n))
            return n
        except RuntimeError:
            continue
    raise AssertionError("no length up to 2000 runs")


@pytest.mark.parametrize("spec", [W2V_CONV, "[(32, 10, 5)] + [(32, 3, 2)] * 2", "[(8, 3, 1), (8, 4, 3), (8, 2, 2)]"])
def test_receptive_field_is_the_shortest_audio_the_convolutions_take(spec):
    layers = parse_conv_layers(spec)
    assert receptive_field(layers) == shortest_input(layers)
    if spec == W2V_CONV:
        assert receptive_field(layers) == 400  # 25 ms at 16 kHz


BAD_AUDIO = {
    # name: (samples put at entry 2, i.e. tsv line 4; what the error says)
    "nan": (with_nan(9000), "holds NaN or infinite samples (1 of 9000)"),
    "inf": (with_nan(9000, float("-inf")), "holds NaN or infinite samples (1 of 9000)"),
    "320 samples": (noise(320), "320 samples, fewer than the 400 the model's convolutions need"),
    "1 sample": (noise(1), "1 samples, fewer than the 400"),
    "empty": (noise(0), "0 samples, fewer than the 400"),
}


#: (case, batch size, backend): every case with PyTorch; NaN, 320 and 0 samples with onnxruntime
REFUSALS = [(case, size, "pytorch") for case in sorted(BAD_AUDIO) for size in ("1", "3")] + [
    pytest.param(case, size, "onnxruntime", marks=ONNX.marks) for case in ("nan", "320 samples", "empty")
    for size in ("1", "3")]


@pytest.mark.parametrize("case, batch_size, backend", REFUSALS)
def test_undecodable_audio_is_refused_by_its_manifest_line(case, batch_size, backend, tmp_path, corpus, plain_ctc,
                                                           request, capsys):
    """Issue 28 item 5: one line naming tsv:line and the file, for each batch size and backend (batched, it used
    to be decoded from padding; alone, a kernel-size traceback); no result files."""
    samples, expected = BAD_AUDIO[case]
    data = copy_manifest(corpus, str(tmp_path / "data"))
    path = put_audio(data, 2, samples)
    line = infer_fails(capsys, data, model_for(backend, plain_ctc, request), tmp_path / "r", "--batch-size",
                       batch_size, "--num-workers", "0", backend=backend)
    assert line.startswith(f"{data}/test.tsv:4: {path}: {expected}"), line
    assert line.endswith("; not decoded (--skip-bad-audio skips such utterances with a warning)"), line
    assert not (tmp_path / "r").exists()


def test_undecodable_audio_read_in_a_worker_process(tmp_path, corpus, plain_ctc, capsys):
    data = copy_manifest(corpus, str(tmp_path / "data"))
    path = put_audio(data, 4, with_nan(12000))
    line = infer_fails(capsys, data, plain_ctc, tmp_path / "r", "--batch-size", "2", "--num-workers", "1")
    assert line.startswith(f"{data}/test.tsv:6: {path}: holds NaN or infinite samples"), line


@pytest.mark.parametrize("backend", ["pytorch", ONNX])
def test_skip_bad_audio_warns_per_utterance_and_counts(backend, tmp_path, corpus, plain_ctc, request, capsys):
    """Under --skip-bad-audio: one warning per skipped utterance, the others decoded, the count in summary.json."""
    data = copy_manifest(corpus, str(tmp_path / "data"))
    nan, short = put_audio(data, 1, with_nan(9000)), put_audio(data, 3, noise(320))
    infer_main(argv(data, model_for(backend, plain_ctc, request), tmp_path / "r", "--batch-size", "3",
                    "--num-workers", "0", "--skip-bad-audio", backend=backend))
    summary = read_summary(str(tmp_path / "r"))
    assert (summary["utterances"], summary["skipped_utterances"]) == (4, 2)
    assert sorted(u for u, _ in read_result_file(str(tmp_path / "r" / "hypo.word"))) == [0, 2, 4, 5]
    assert sorted(warnings_of(capsys)) == sorted([
        f"{data}/test.tsv:3: {nan}: holds NaN or infinite samples (1 of 9000); skipped (--skip-bad-audio)",
        f"{data}/test.tsv:5: {short}: 320 samples, fewer than the 400 the model's convolutions need for one output "
        "frame (its receptive field); skipped (--skip-bad-audio)",
    ])
    assert len(summary["skipped_audio"]) == 2 and f"{data}/test.tsv:3: {nan}" in summary["skipped_audio"][0]


def test_the_receptive_field_is_the_models(tmp_path, corpus, capsys):
    """A model whose conv stack sees 40 samples decodes 320-sample audio and refuses 30 samples (not a constant)."""
    from experiments.checkpoints import write_wav2vec2_checkpoint

    w2v = str(tmp_path / "w2v.pt")
    write_wav2vec2_checkpoint(w2v, dict(SMALL_W2V, conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 2"), seed=0)
    ckpt = write_plain_ctc_checkpoint(str(tmp_path / "ctc.pt"), w2v, corpus)
    capsys.readouterr()  # building logs to the handler of an earlier test's stderr
    data = copy_manifest(corpus, str(tmp_path / "data"))
    put_audio(data, 2, noise(320))
    infer_main(argv(data, ckpt, tmp_path / "r", "--batch-size", "1", "--num-workers", "0"))
    assert read_summary(str(tmp_path / "r"))["utterances"] == 6
    path = put_audio(data, 2, noise(30))
    line = infer_fails(capsys, data, ckpt, tmp_path / "r2", "--batch-size", "2", "--num-workers", "0")
    assert line.startswith(f"{data}/test.tsv:4: {path}: 30 samples, fewer than the 40 the model's"), line


@pytest.mark.skipif(not HAVE_ONNX, reason="needs pip install -e '.[onnx]'")
def test_onnx_model_records_its_conv_layers(plain_onnx):
    """New ONNX files store the conv stack in their metadata; older ones are read from the graph's Conv nodes."""
    from fairseq_prune.onnx.runtime import OnnxCtcModel, graph_conv_layers

    model = OnnxCtcModel(plain_onnx)
    expected = parse_conv_layers(SMALL_W2V["conv_feature_layers"])
    assert [tuple(layer) for layer in model.meta.conv_layers] == expected and model.receptive_field == 400
    assert [(k, s) for _, k, s in graph_conv_layers(plain_onnx)] == [(k, s) for _, k, s in expected]


# ---------------------------------------------------------------------------------------------------------------
# item 6: labels


def test_label_symbols_missing_from_the_dictionary(tmp_path, corpus, plain_ctc, capsys):
    """A warning naming the first one's file:line and the count; --strict-labels refuses."""
    data = copy_manifest(corpus, str(tmp_path / "data"))
    ltr = os.path.join(data, "test.ltr")
    lines = open(ltr).readlines()
    lines[1] = "É " + lines[1]
    lines[4] = lines[4].replace(" ", " # ", 2)
    open(ltr, "w").writelines(lines)
    infer_main(argv(data, plain_ctc, tmp_path / "r", "--batch-size", "3", "--num-workers", "0"))
    expected = (f"{ltr}:2: 'É' is not in the model's dictionary (32 symbols); 3 label symbol(s) on 2 line(s) are "
                "not, and become <unk> in ref.word")
    assert warnings_of(capsys) == [f"{expected}; scores count them as errors"]
    assert "<unk>" in dict(read_result_file(str(tmp_path / "r" / "ref.word")))[1]
    line = infer_fails(capsys, data, plain_ctc, tmp_path / "r2", "--strict-labels")
    assert line == f"{expected} (--strict-labels)"


# ---------------------------------------------------------------------------------------------------------------
# item 7: the dictionary against every checkpoint kind


def _dictionary_copy(corpus, tmp_path, change) -> str:
    data = copy_manifest(corpus, str(tmp_path / "data"))
    path = os.path.join(data, "dict.ltr.txt")
    lines = open(path).readlines()
    open(path, "w").writelines(change(lines))
    return data


def _swap(lines):
    lines[1], lines[2] = lines[2], lines[1]  # E <-> T: units 5 and 6
    return lines


@pytest.mark.parametrize("kind", ["plain", "gated"])
def test_dictionary_of_another_size_is_refused_before_loading(kind, tmp_path, corpus, plain_ctc, gated, capsys):
    data = _dictionary_copy(corpus, tmp_path, lambda lines: lines + ["play_games 1\n"])
    ckpt = plain_ctc if kind == "plain" else gated
    line = infer_fails(capsys, data, ckpt, tmp_path / "r")
    assert line == (f"{ckpt}: the model does not fit {data}/dict.ltr.txt (not the dictionary it was trained with?): "
                    "size mismatch: its CTC output layer has 32 units, the dictionary 33 symbols (specials included)")


@pytest.mark.parametrize("kind", ["plain", "gated"])
def test_swapped_dictionary_is_named_for_checkpoints_that_store_none(kind, tmp_path, corpus, plain_ctc, gated, capsys):
    """Against the training run's dict.ltr.txt when it is there; else a warning that the order cannot be proven."""
    data = _dictionary_copy(corpus, tmp_path, _swap)
    ckpt = plain_ctc if kind == "plain" else gated
    infer_main(argv(data, ckpt, tmp_path / "r", "--num-workers", "0"))
    assert warnings_of(capsys) == [
        f"{data}/dict.ltr.txt differs from {corpus}/dict.ltr.txt, the dictionary of the run that trained {ckpt} "
        f"(unit 5 is 'T' here but 'E' there): the hypotheses are wrong unless the model was trained with "
        f"{data}/dict.ltr.txt"]
    moved = str(tmp_path / "moved.pt")
    state = torch.load(ckpt, weights_only=False)
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")
    torch.save(state, moved)
    infer_main(argv(corpus, moved, tmp_path / "r2", "--num-workers", "0"))
    assert warnings_of(capsys) == [
        f"{moved} stores no dictionary and its training run's is not found (looked for dict.ltr.txt in "
        f"{tmp_path}/gone, {tmp_path}): {corpus}/dict.ltr.txt has as many symbols as the model has outputs, but "
        "nothing can prove their order"]


def test_dictionary_stored_by_the_trainer_wins_and_a_different_one_is_named(tmp_path, corpus, gated, capsys):
    """fairseq's trainer stores the dictionary in task_state and fairseq decodes with it: the manifest's is named
    when it differs, and the results are those of the stored one."""
    from fairseq.data import Dictionary

    trained = str(tmp_path / "trained.pt")
    state = torch.load(gated, weights_only=False)
    state["task_state"] = {"target_dictionary": Dictionary.load(os.path.join(corpus, "dict.ltr.txt"))}
    torch.save(state, trained)
    infer_main(argv(corpus, trained, tmp_path / "same", "--num-workers", "0"))
    assert warnings_of(capsys) == []
    data = _dictionary_copy(corpus, tmp_path, _swap)
    infer_main(argv(data, trained, tmp_path / "swapped", "--num-workers", "0"))
    assert warnings_of(capsys) == [
        f"{data}/dict.ltr.txt differs from the dictionary {trained} stores (stored in its task_state; unit 5 is 'T' "
        "here but 'E' there): decoding with the stored one, as fairseq does"]
    for name in ("hypo.word", "ref.word"):
        assert open(tmp_path / "same" / name).read() == open(tmp_path / "swapped" / name).read()
