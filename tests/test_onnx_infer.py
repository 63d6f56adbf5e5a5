"""``fairseq-prune-infer --backend onnxruntime``: the same manifest decoded by onnxruntime gives the PyTorch path's
hypothesis files, WER, transcript WER and intent accuracy; what it cannot decode is refused in one line."""
import json
import os
import shutil

import pytest

pytest.importorskip("onnxruntime", reason="the ONNX path needs pip install -e '.[onnx]'")
pytest.importorskip("onnx", reason="the ONNX path needs pip install -e '.[onnx]'")

from onnx_fixtures import corpus, exported, gated, plain_ctc, to_onnx  # noqa: E402,F401  (fixtures)


MAX_TOKENS = "60000"  # 16 kHz samples: 2-5 utterances of 0.5-1.5 s per batch, i.e. padded batches


def decode(path: str, data: str, results: str, *args: str) -> dict:
    from fairseq_prune.cli.infer import get_parser, main

    return main(get_parser().parse_args(
        [data, "--path", path, "--results-path", results, "--cpu", "--quiet", "--num-workers", "0", *args]))


def assert_same_results(a: str, b: str) -> None:
    from fairseq_prune.inference.results import RESULT_FILES

    for name in RESULT_FILES:
        assert (open(os.path.join(a, name)).read() == open(os.path.join(b, name)).read()), name


SAME = ("utterances", "wer", "word_errors", "ref_words", "transcript_wer", "intent_accuracy", "intent_correct",
        "intent_total", "audio_seconds", "labels", "post_process", "decoder", "model", "max_tokens", "batch_size")


def test_infer_onnxruntime_backend_same_results(tmp_path, exported, corpus):
    """The same manifest decoded by PyTorch and by onnxruntime (padded batches): identical hypothesis and
    reference files, WER, transcript WER and intent accuracy; RTF measured."""
    onnx_path = str(tmp_path / "pruned.onnx")
    to_onnx(exported, onnx_path)
    torch_run = decode(exported, corpus, str(tmp_path / "pytorch"), "--max-tokens", MAX_TOKENS)
    ort_run = decode(onnx_path, corpus, str(tmp_path / "ort"), "--max-tokens", MAX_TOKENS, "--backend", "onnxruntime")
    assert_same_results(str(tmp_path / "pytorch"), str(tmp_path / "ort"))
    hyps = open(tmp_path / "ort" / "hypo.word").read().splitlines()
    assert len(hyps) == 9 and len(set(hyps)) >= 5
    assert {k: torch_run[k] for k in SAME} == {k: ort_run[k] for k in SAME}
    assert ort_run["intent_total"] == 9 and ort_run["transcript_wer"] is not None
    assert (torch_run["backend"], ort_run["backend"]) == ("pytorch", "onnxruntime")
    assert ort_run["checkpoint"] == os.path.abspath(onnx_path) and ort_run["rtf"] > 0
    with open(tmp_path / "ort" / "summary.json") as f:
        assert json.load(f)["backend"] == "onnxruntime"


def test_infer_onnxruntime_without_padding_mask(tmp_path, plain_ctc, corpus, capsys):
    """A model exported with --no-padding-mask decodes one utterance at a time, like PyTorch at --batch-size 1;
    a batched run is refused before loading anything else."""
    from fairseq_prune.cli.infer import cli_main

    onnx_path = str(tmp_path / "plain.onnx")
    to_onnx(plain_ctc, onnx_path, "--no-padding-mask", "--output", "logits")
    decode(plain_ctc, corpus, str(tmp_path / "pytorch"), "--batch-size", "1")
    decode(onnx_path, corpus, str(tmp_path / "ort"), "--batch-size", "1", "--backend", "onnxruntime")
    assert_same_results(str(tmp_path / "pytorch"), str(tmp_path / "ort"))
    with pytest.raises(SystemExit) as e:
        cli_main([corpus, "--path", onnx_path, "--backend", "onnxruntime", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "plain.onnx: was exported with --no-padding-mask" in err and "--batch-size 1" in err


@pytest.mark.parametrize("case", ["checkpoint instead of onnx", "other dictionary"])
def test_infer_onnxruntime_bad_input(case, tmp_path, exported, corpus, capsys):
    from fairseq_prune.cli.infer import cli_main

    data = str(tmp_path / "data")
    shutil.copytree(corpus, data)
    if case == "checkpoint instead of onnx":
        path, expected = exported, ["pruned.pt", "not an ONNX model onnxruntime can load"]
    else:
        path = str(tmp_path / "m.onnx")
        to_onnx(exported, path)
        lines = open(os.path.join(data, "dict.ltr.txt")).read().splitlines()
        lines[0], lines[1] = lines[1], lines[0]
        open(os.path.join(data, "dict.ltr.txt"), "w").write("\n".join(lines) + "\n")
        expected = ["dict.ltr.txt is not the dictionary", "m.onnx"]
    with pytest.raises(SystemExit) as e:
        cli_main([data, "--path", path, "--backend", "onnxruntime", "--quiet", "--results-path", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fairseq-prune-infer: error: ")
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "r").exists() or not os.listdir(tmp_path / "r")
