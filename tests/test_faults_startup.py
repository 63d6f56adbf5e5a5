"""Start-up faults of the commands (issue 28, items 8-11): options out of range end in argparse's one line; an
utterance longer than --max-tokens is named; fairseq's infer.py launcher reads the checkpoint first; export and
ONNX find the dictionary beside the checkpoint; the notices of torch and fairseq are hidden unless asked for; the
corpus scripts' error lines carry their name."""
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import fairseq_prune  # noqa: F401  (registers our model, task and safe globals)
from fairseq_prune.cli import fairseq_infer as launcher
from fairseq_prune.cli import infer as infer_cli
from fairseq_prune.cli import onnx as onnx_cli
from fairseq_prune.cli.startup import quiet_start
from fairseq_prune.export.prune import target_dictionary
from fairseq_prune.io.checkpoints import read_checkpoint
from fairseq_prune.onnx.export import MIN_OPSET, max_opset
from helpers import REPO, VENV_BIN, run_unchecked
from fairseq_prune.io.signals import run_or_exit
from manifests.common import ManifestError

START_MODEL = os.path.join(REPO, "assets", "start_model", "wav2vec_ctc_mini.pt")


def parse_fails(parser, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------------
# item 9: arguments


@pytest.mark.parametrize("option, value, expected", [
    ("--batch-size", "0", "expected an integer >= 1, got 0"),
    ("--batch-size", "-3", "expected an integer >= 1, got -3"),
    ("--num-workers", "-1", "expected an integer >= 0 (0: in the main process), got -1"),
    ("--max-tokens", "-5", "expected an integer >= 0 (0: no limit), got -5"),
    ("--beam", "0", "expected an integer >= 1, got 0"),
    ("--batch-size", "two", "expected an integer >= 1, got 'two'"),
])
def test_infer_options_out_of_range_are_refused_by_the_parser(option, value, expected, capsys):
    line = parse_fails(infer_cli.get_parser(), ["data", "--path", "m.pt", option, value], capsys)
    assert line == f"fairseq-prune-infer: error: argument {option}: {expected}"


def test_onnx_opset_in_the_supported_range(capsys):
    parser = onnx_cli.get_parser()
    for opset in (MIN_OPSET - 1, max_opset() + 1, 99):
        line = parse_fails(parser, ["m.pt", "m.onnx", "--opset", str(opset)], capsys)
        assert line == f"fairseq-prune-onnx: error: argument --opset: expected an integer from {MIN_OPSET} to " \
                       f"{max_opset()}, got {opset}"
    assert parser.parse_args(["m.pt", "m.onnx", "--opset", str(max_opset())]).opset == max_opset()


def test_max_tokens_smaller_than_an_utterance_names_it(tmp_path, corpus, plain_ctc, capsys):
    with open(os.path.join(corpus, "test.tsv")) as f:
        rows = [(line.split("\t")[0], int(line.split("\t")[1])) for line in f.readlines()[1:]]
    i = max(range(len(rows)), key=lambda j: rows[j][1])
    with pytest.raises(SystemExit) as e:
        infer_cli.cli_main([corpus, "--path", plain_ctc, "--max-tokens", "1000", "--cpu", "--results-path",
                            str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"fairseq-prune-infer: error: {corpus}/test.tsv:{i + 2}: {corpus}/{rows[i][0]}: {rows[i][1]} samples do not "
        f"fit in a batch of --max-tokens 1000; give --max-tokens {rows[i][1]} or more (0: no limit)")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------------------
# item 8: fairseq's infer.py launcher


@pytest.mark.parametrize("damage", ["empty", "truncated", "missing"])
def test_launcher_reads_the_checkpoint_first(damage, tmp_path, corpus, plain_ctc, capsys):
    """One error line, exit 2, no hydra folder or log left, for a checkpoint fairseq's loader would fail on."""
    bad = tmp_path / "bad.pt"
    if damage != "missing":
        bad.write_bytes(b"" if damage == "empty" else open(plain_ctc, "rb").read()[:100000])
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        launcher.main(["task=audio_finetuning", f"task.data={corpus}", "task.labels=ltr", f"common_eval.path={bad}",
                       "dataset.gen_subset=test", f"decoding.results_path={results}", "common.cpu=true"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fairseq_infer: error: {bad}: "), lines
    assert lines[0].endswith(" (common_eval.path)")
    assert not results.exists() and not (tmp_path / ".hydra").exists()


def test_launcher_checkpoint_paths():
    assert launcher.checkpoint_paths(["common_eval.path=a.pt:b.pt", "task.data=x"]) == ["a.pt", "b.pt"]
    assert launcher.checkpoint_paths(["+common_eval.path='c.pt'"]) == ["c.pt"]
    assert launcher.checkpoint_paths(["dataset.gen_subset=test"]) == []


# ---------------------------------------------------------------------------------------------------------------
# item 10: the dictionary beside the checkpoint


def _moved(src: str, folder, keep_task_state: bool = False) -> str:
    """A copy of checkpoint ``src`` in ``folder`` whose task.data folder no longer exists (a shipped model)."""
    folder.mkdir(exist_ok=True)
    state = torch.load(src, weights_only=False)
    state["cfg"]["task"]["data"] = str(folder / "gone")
    if not keep_task_state:
        state.pop("task_state", None)
    path = str(folder / os.path.basename(src))
    torch.save(state, path)
    return path


def test_onnx_finds_the_dictionary_beside_the_checkpoint(tmp_path, corpus, plain_ctc):
    path = _moved(plain_ctc, tmp_path / "model")
    state = read_checkpoint(path)
    with pytest.raises(onnx_cli.OnnxModelError) as e:
        onnx_cli.model_dictionary(path, state, None, "ltr")
    assert str(e.value) == (f"{path}: stores no dictionary and none was found (looked for dict.ltr.txt in "
                            f"{tmp_path}/model/gone, {tmp_path}/model); give the model's dictionary with --dict")
    shutil.copy(os.path.join(corpus, "dict.ltr.txt"), tmp_path / "model")
    dictionary, found = onnx_cli.model_dictionary(path, state, None, "ltr")
    assert found == str(tmp_path / "model" / "dict.ltr.txt") and len(dictionary) == 32


def test_export_finds_the_dictionary_beside_the_checkpoint(tmp_path, corpus, plain_ctc, caplog):
    path = _moved(plain_ctc, tmp_path / "model")
    state = read_checkpoint(path)
    assert target_dictionary(state, 32, None, path) is None
    assert f"no dictionary found (looked for dict.ltr.txt in {tmp_path}/model/gone, {tmp_path}/model)" in caplog.text
    shutil.copy(os.path.join(corpus, "dict.ltr.txt"), tmp_path / "model")
    stored = target_dictionary(state, 32, None, path)
    assert stored["file"] == str(tmp_path / "model" / "dict.ltr.txt") and len(stored["symbols"]) == 32


def test_the_shipped_start_model_finds_its_dictionary(tmp_path):
    """assets/start_model/: its task.data is a folder of the machine that trained it; dict.ltr.txt lies beside."""
    path = _moved(START_MODEL, tmp_path / "model")
    shutil.copy(os.path.join(os.path.dirname(START_MODEL), "dict.ltr.txt"), tmp_path / "model")
    dictionary, found = onnx_cli.model_dictionary(path, read_checkpoint(path), None, "ltr")
    assert found == str(tmp_path / "model" / "dict.ltr.txt") and len(dictionary) == 50


@pytest.mark.slow
def test_the_shipped_start_model_goes_to_onnx_without_dict(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "start.onnx"
    p = run_unchecked([os.path.join(VENV_BIN, "fairseq-prune-onnx"), START_MODEL, str(out)], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.is_file() and "dictionary" in p.stdout


# ---------------------------------------------------------------------------------------------------------------
# item 11: quiet start-up, program names


def _quiet_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(PATH=VENV_BIN + os.pathsep + env.get("PATH", ""), OMP_NUM_THREADS="1", **extra)
    return env


def _onnx_error_output(tmp_path, *args, **env) -> list:
    p = subprocess.run([os.path.join(VENV_BIN, "fairseq-prune-onnx"), str(tmp_path / "none.pt"),
                        str(tmp_path / "o.onnx"), *args], capture_output=True, text=True, env=_quiet_env(**env),
                       timeout=300)
    assert p.returncode == 2
    return p.stderr.strip().splitlines()


def test_a_command_prints_only_its_error_line(tmp_path):
    assert _onnx_error_output(tmp_path) == [f"fairseq-prune-onnx: error: {tmp_path}/none.pt: no such checkpoint file"]


@pytest.mark.slow
def test_verbose_or_pythonwarnings_show_the_notices(tmp_path):
    for lines in (_onnx_error_output(tmp_path, "--verbose"), _onnx_error_output(tmp_path, PYTHONWARNINGS="default")):
        text = "\n".join(lines)
        assert "FutureWarning: `torch.jit.script` is deprecated" in text and "tensorboardX" in text, text


def test_quiet_start_only_in_our_commands(monkeypatch):
    pin = "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used."
    monkeypatch.setattr(sys, "warnoptions", [])
    for argv, quiet in ((["/venv/bin/fairseq-prune-infer", "data"], True), (["-m"], True),
                        (["/venv/bin/fairseq-prune-infer", "--verbose"], False),
                        (["/venv/bin/fairseq-hydra-train"], False), (["/venv/bin/pytest"], False),
                        ([os.path.join(REPO, "manifests", "slurp.py"), "corpus"], True),
                        ([os.path.join(REPO, "scripts", "demo.py")], False), (["/elsewhere/manifests/slurp.py"], False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert quiet_start(argv) is quiet
            warnings.warn(pin, UserWarning)
            warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
            warnings.warn("something else", UserWarning)
        assert [str(w.message) for w in caught][-1] == "something else"
        assert len(caught) == (1 if quiet else 3), argv
    monkeypatch.setattr(sys, "warnoptions", ["default"])
    assert quiet_start(["/venv/bin/fairseq-prune-infer"]) is False
    # fairseq's own entry (its iterators set it in os.environ when a data loader has workers)
    monkeypatch.setattr(sys, "warnoptions", ["ignore:semaphore_tracker:UserWarning"])
    assert quiet_start(["/venv/bin/fairseq-prune-infer"]) is True


def test_corpus_scripts_name_themselves_on_the_error_line(capsys, monkeypatch):
    def bad():
        raise ManifestError("x.tsv: broken")

    with pytest.raises(SystemExit) as e:
        run_or_exit(bad, "synthesize.py")
    assert e.value.code == 1 and capsys.readouterr().err == "synthesize.py: error: x.tsv: broken\n"
    monkeypatch.setattr(sys, "argv", ["manifests/librispeech.py", "--dest", "d"])
    with pytest.raises(SystemExit):
        run_or_exit(bad)
    assert capsys.readouterr().err == "librispeech.py: error: x.tsv: broken\n"
