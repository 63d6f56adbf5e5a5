"""Faults and bad input in fairseq-prune-export and fairseq-prune-infer (issue 17): each ends in one clear line
naming the file at fault, nothing is left half-written, and a killed run's temporary files do not stay.

Export: outputs that cannot be written are refused before the checkpoint is loaded; a write that fails later (a
full disk, simulated) removes every output of the command; a dense checkpoint is refused; the model's dictionary
is stored. Infer: missing, corrupt or truncated audio names the audio file and its manifest line; a results path
that is a file is refused before loading; SIGTERM removes the temporary result files and the next run removes
those of a ``kill -9``; a dictionary in another order than the exported model's is refused; audio whose
channels cancel out when mixed down is named in a warning.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import fairseq_prune  # noqa: F401  (registers our model, task and safe globals)
from fairseq_prune.io import safe_output
from fairseq_prune.io.checkpoints import atomic_outputs
from fairseq_prune.cli import export as export_cli
from fairseq_prune.cli.infer import cli_main as infer_main
from fairseq_prune.inference.inputs import mixdown_loss_db
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig
from helpers import copy_manifest, start
from infer_fixtures import read_summary, write_ctc_checkpoint



# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def export_fails(capsys, *argv) -> str:
    """fairseq-prune-export in this process, expected to fail: returns its only stderr line."""
    with pytest.raises(SystemExit) as e:
        export_cli.cli_main([str(a) for a in argv])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "", "nothing is printed before the error (the table comes after the outputs are written)"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairseq-prune-export: error: "), err
    return lines[0]


def infer_fails(capsys, data, ckpt, results, *args) -> str:
    """fairseq-prune-infer in this process, expected to fail: returns its last stderr line (checked to be the
    only error line, with no traceback before it)."""
    with pytest.raises(SystemExit) as e:
        infer_main([str(data), "--path", str(ckpt), "--results-path", str(results), "--cpu", "--quiet", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("fairseq-prune-infer: error: "), err[-3000:]
    return last


def decode(data, ckpt, results, *args) -> dict:
    infer_main([str(data), "--path", str(ckpt), "--results-path", str(results), "--cpu", "--quiet",
                "--num-workers", "0", *args])
    return read_summary(str(results))


def temp_files(folder) -> list:
    return sorted(n for n in os.listdir(folder) if safe_output.temp_file_pid(n) is not None)


def no_loading(monkeypatch):
    """Make loading a checkpoint fail the test: the error must come before any work."""
    def loaded(*a, **k):
        raise AssertionError("the checkpoint was loaded before the output was checked")

    monkeypatch.setattr(export_cli, "load_gated", loaded)
    monkeypatch.setattr("fairseq_prune.inference.loop.read_ctc_checkpoint", loaded)


# ---------------------------------------------------------------------------------------------------------------
# export: outputs


UNWRITABLE = {
    # name: (output, --plot, --summary-json, expected in the error) given tmp folder t
    "output is a folder (--force)": (lambda t: (t / "dir", None, None), "dir: is a folder; OUTPUT needs a file name"),
    "--plot is a folder": (lambda t: (t / "o.pt", t / "dir", None), "dir: is a folder; --plot needs a file name"),
    "read-only folder": (lambda t: ("/sys/o.pt", None, None), "/sys/o.pt: cannot create files in /sys (Permission denied)"),
    "/proc": (lambda t: (t / "o.pt", None, "/proc/s.json"), "/proc/s.json: cannot create files in /proc (No such file"),
    "a device": (lambda t: ("/dev/full", None, None), "/dev/full: exists and is not a regular file"),
    "folder is a file": (lambda t: (t / "o.pt", None, t / "plain" / "s.json"), "s.json: cannot be written, "),
    "same file twice": (lambda t: (t / "o.pt", None, t / "o.pt"), "o.pt: OUTPUT and --summary-json name the same file"),
    "image format": (lambda t: (t / "o.pt", t / "arch.xyz", None), "arch.xyz: matplotlib cannot write .xyz images"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_export_refuses_unwritable_outputs_before_loading(case, tmp_path, gated, capsys, monkeypatch):
    make, expected = UNWRITABLE[case]
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("a file")
    before = sorted(os.listdir(tmp_path))
    output, plot, summary = make(tmp_path)
    no_loading(monkeypatch)
    argv = [gated, output, "--force"] + (["--plot", plot] if plot else []) + (["--summary-json", summary] if summary else [])
    assert expected in export_fails(capsys, *argv)
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "dir") == []


def _no_space(obj, path, *args, **kwargs):
    """In place of torch.save(obj, path) or save_json(obj, path): a disk that fills up while writing."""
    with open(path, "wb") as f:
        f.write(b"partial")
    _no_space.tmp = path
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_export_full_disk_leaves_nothing(tmp_path, gated, capsys, monkeypatch):
    """The model's write fails (a full disk, simulated): one line naming OUTPUT, no output, plot, summary,
    temporary file or folder made for the plot, and the file --force would have replaced is still there."""
    out = tmp_path / "out.pt"
    out.write_bytes(b"previous model")
    monkeypatch.setattr(torch, "save", _no_space)
    line = export_fails(capsys, gated, out, "--force", "--plot", tmp_path / "new" / "arch.png",
                        "--summary-json", tmp_path / "summary.json")
    assert line == f"fairseq-prune-export: error: {out}: cannot write (No space left on device)"
    assert sorted(os.listdir(tmp_path)) == ["out.pt"] and out.read_bytes() == b"previous model"
    assert safe_output.temp_file_pid(os.path.basename(_no_space.tmp)) == os.getpid()  # the naming swept later


def test_export_summary_failure_leaves_no_model(tmp_path, gated, capsys, monkeypatch):
    """Issue 17, item 2: --summary-json fails after the model was written: neither is left."""
    monkeypatch.setattr(export_cli, "save_json", _no_space)
    summary = tmp_path / "summary.json"
    line = export_fails(capsys, gated, tmp_path / "out.pt", "--plot", tmp_path / "arch.png", "--summary-json", summary)
    assert line == f"fairseq-prune-export: error: {summary}: cannot write (No space left on device)"
    assert os.listdir(tmp_path) == []


def test_outputs_already_renamed_are_removed_when_a_rename_fails(tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    paths = [str(tmp_path / "a.pt"), str(tmp_path / "b.json")]
    with pytest.raises(OSError):
        with atomic_outputs(paths) as tmps:
            for tmp in tmps:
                open(tmp, "w").write("x")
    assert calls == paths and os.listdir(tmp_path) == []


def test_export_success_writes_all_outputs_and_the_dictionary(tmp_path, gated, exported, corpus, capsys):
    from fairseq.data import Dictionary

    out, plot, summary = tmp_path / "o.pt", tmp_path / "sub" / "arch", tmp_path / "s.json"
    export_cli.cli_main([gated, str(out), "--plot", str(plot), "--summary-json", str(summary)])
    assert "wrote" in capsys.readouterr().out.strip().splitlines()[-1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # no extension: png, written to that very name
    state = torch.load(out, weights_only=True)
    assert json.loads(summary.read_text()) == state["pruning_summary"]
    stored = torch.load(exported, weights_only=True)["target_dictionary"]
    assert stored["file"] == os.path.join(corpus, "dict.ltr.txt")
    assert stored["symbols"] == Dictionary.load(stored["file"]).symbols
    assert sorted(os.listdir(tmp_path)) == ["o.pt", "s.json", "sub"] and os.listdir(tmp_path / "sub") == ["arch"]


def test_export_refuses_a_dense_checkpoint(tmp_path, small_w2v, corpus, capsys):
    """Issue 17, item 9b: a checkpoint without gates has nothing to export; say what to do instead."""
    dense = write_ctc_checkpoint(str(tmp_path / "dense.pt"), Wav2Vec2CtcPruningConfig(w2v_path=small_w2v), corpus)
    line = export_fails(capsys, dense, tmp_path / "out.pt")
    assert f"{dense}: has no hard concrete gates" in line and "fairseq-prune-infer --path" in line
    assert not (tmp_path / "out.pt").exists()


def test_export_dictionary_of_another_size_is_refused(tmp_path, gated, capsys):
    other = tmp_path / "dict.txt"
    other.write_text("A 1\nB 1\n")
    line = export_fails(capsys, gated, tmp_path / "out.pt", "--dictionary", other)
    assert f"{other} has 6 units (specials included) but the model's output layer has" in line
    assert not (tmp_path / "out.pt").exists()


# ---------------------------------------------------------------------------------------------------------------
# stale temporary files and signals


def _stale_temp_file(folder) -> str:
    """A temporary file named by safe_output.new_temp_file in a process that has ended (so: stale)."""
    code = "import sys; from fairseq_prune.io.safe_output import new_temp_file; print(new_temp_file(sys.argv[1], '.pt'))"
    path = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    return os.path.basename(path)


def test_export_sweeps_only_stale_temp_files_of_its_naming(tmp_path, gated):
    stale = _stale_temp_file(tmp_path)
    pid, rest = stale[len(".tmp-"):].split("@", 1)
    host = rest.rsplit("-", 1)[0]
    kept = [
        f".tmp-{os.getpid()}@{host}-abcdefgh.pt",  # a running process's
        f".tmp-{pid}@other-{host}-abcdefgh.pt",  # another machine's (its pid means nothing here)
        ".tmp-abcdefgh.pt",  # no pid: cannot tell
        f".tmp-{pid}@{host}-abcdefgh.pt.bak",  # not exactly our naming
        "model.tmp",
    ]
    for name in kept:
        (tmp_path / name).write_text("x")
    export_cli.cli_main([gated, str(tmp_path / "out.pt")])
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["out.pt"])


SLOW = """
import sys, time
import {module} as target
def hang(*args, **kwargs):
    time.sleep(600)  # the test kills the process here
target.{name} = hang
from {cli} import cli_main
cli_main(sys.argv[1:])
"""


def _start_hanging(module, name, cli, *argv):
    return start([sys.executable, "-c", SLOW.format(module=module, name=name, cli=cli), *map(str, argv)])


def _wait_for_temp_files(folder, p, n, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(folder) and len(temp_files(folder)) == n:
            return temp_files(folder)
        assert p.poll() is None, p.communicate()[0][-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no temporary files in {folder} after {timeout} s")


@pytest.mark.slow
def test_sigterm_during_export_leaves_nothing(tmp_path, gated):
    p = _start_hanging("fairseq_prune.cli.export", "save_json", "fairseq_prune.cli.export", gated,
                       tmp_path / "out.pt", "--summary-json", tmp_path / "s.json")
    _wait_for_temp_files(tmp_path, p, 2)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 143, out[-3000:]
    assert out.strip().splitlines()[-1] == "fairseq-prune-export: terminated by SIGTERM; unfinished outputs were removed"
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_sigterm_and_kill_during_decoding(tmp_path, plain_ctc, corpus):
    """SIGTERM (with a data-loading worker): the temporary result files are removed at once. kill -9: they stay,
    and the next run into the same folder removes them (and no other file)."""
    results = tmp_path / "results"
    argv = (corpus, "--path", plain_ctc, "--results-path", results, "--cpu", "--quiet")
    p = _start_hanging("fairseq_prune.inference.loop", "emissions", "fairseq_prune.cli.infer", *argv,
                       "--num-workers", "1")
    _wait_for_temp_files(results, p, 5)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 143, out[-3000:]
    assert out.strip().splitlines()[-1].endswith("terminated by SIGTERM; unfinished result files were removed")
    assert not results.exists()  # nor the folder it made for them

    p = _start_hanging("fairseq_prune.inference.loop", "emissions", "fairseq_prune.cli.infer", *argv,
                       "--num-workers", "0")
    left = _wait_for_temp_files(results, p, 5)
    p.kill()
    p.communicate(timeout=60)
    assert temp_files(results) == left and {safe_output.temp_file_pid(n) for n in left} == {p.pid}
    mine = f".tmp-{os.getpid()}@{left[0].split('@', 1)[1]}"  # this (running) process's naming: kept
    (results / mine).write_text("x")
    decode(corpus, plain_ctc, results)
    assert sorted(os.listdir(results)) == sorted([mine, "hypo.word", "hypo.units", "ref.word", "ref.units", "summary.json"])


# ---------------------------------------------------------------------------------------------------------------
# infer: audio, results path, dictionary


def _replace_audio(data, index, audio=None, rate=16000, raw=None, name=None):
    """Put other audio (or raw bytes) at manifest entry ``index`` (tsv line index + 2); returns its path."""
    tsv = os.path.join(data, "test.tsv")
    lines = open(tsv).readlines()
    old_name, size = lines[index + 1].rstrip("\n").split("\t")
    path = os.path.join(data, name or old_name)
    if raw is not None:
        open(path, "wb").write(raw)
    elif audio is not None:
        sf.write(path, audio, rate)
    lines[index + 1] = f"{os.path.basename(path)}\t{size}\n"
    open(tsv, "w").writelines(lines)
    return path


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _noise(n, channels=1, seed=0):
    x = (np.random.default_rng(seed).standard_normal((n, channels)) * 0.1).astype("float32")
    return x[:, 0] if channels == 1 else x


def _size(data, index):
    return int(open(os.path.join(data, "test.tsv")).readlines()[index + 1].split("\t")[1])


AUDIO_FAULTS = {
    # name: (break entry 2 of the manifest copy, expected words in the error, data-loading workers)
    "missing": (lambda d: os.remove(_replace_audio(d, 2)), "audio file not found", "0"),
    "corrupt": (lambda d: _replace_audio(d, 2, raw=b"not audio at all"), "not readable audio (Format not recognised", "0"),
    "truncated wav": (lambda d: _truncate(_replace_audio(d, 2, _noise(_size(d, 2)), name="t.wav")),
                      "samples but the manifest says", "0"),
    "truncated flac (fails when decoded)": (lambda d: _truncate(_replace_audio(d, 2)), "cannot read audio (", "1"),
    "sample rate": (lambda d: _replace_audio(d, 2, _noise(_size(d, 2)), rate=8000), "sample rate 8000 Hz, the model needs 16000", "0"),
}


@pytest.mark.parametrize("case", sorted(AUDIO_FAULTS))
def test_bad_audio_names_the_file_and_its_manifest_line(case, tmp_path, plain_ctc, corpus, capsys):
    """Issue 17, item 3: one line naming the manifest, its line and the audio file, no traceback (with a
    data-loading worker too), no result files."""
    breaks, expected, workers = AUDIO_FAULTS[case]
    data = copy_manifest(corpus, str(tmp_path / "data"))
    breaks(data)
    audio = open(os.path.join(data, "test.tsv")).readlines()[3].split("\t")[0]
    line = infer_fails(capsys, data, plain_ctc, tmp_path / "r", "--num-workers", workers, "--batch-size", "2")
    assert line.startswith(f"fairseq-prune-infer: error: {data}/test.tsv:4: {data}/{audio}: "), line
    assert expected in line, line
    assert not (tmp_path / "r").exists() or os.listdir(tmp_path / "r") == []


def test_results_path_that_is_a_file_is_refused_before_loading(tmp_path, plain_ctc, corpus, capsys, monkeypatch):
    """Issue 17, item 4."""
    results = tmp_path / "results"
    results.write_text("keep me")
    no_loading(monkeypatch)
    line = infer_fails(capsys, corpus, plain_ctc, results)
    assert line == f"fairseq-prune-infer: error: {results}: --results-path is a file, not a folder"
    assert results.read_text() == "keep me"


def test_dictionary_in_another_order_is_refused(tmp_path, exported, corpus, capsys):
    """Issue 17, item 9a: same size, two symbols swapped: refused with both files and the first differing unit;
    a checkpoint without the stored dictionary (older exports) decodes as before."""
    data = copy_manifest(corpus, str(tmp_path / "data"))
    dict_file = os.path.join(data, "dict.ltr.txt")
    lines = open(dict_file).readlines()
    lines[1], lines[2] = lines[2], lines[1]  # E <-> T: units 5 and 6 (after <s> <pad> </s> <unk>)
    open(dict_file, "w").writelines(lines)
    line = infer_fails(capsys, data, exported, tmp_path / "r")
    assert line == (f"fairseq-prune-infer: error: {dict_file} is not the dictionary {exported} was exported with "
                    f"({corpus}/dict.ltr.txt): unit 5 is 'T' in {dict_file} but 'E' in the model's; decode with the "
                    "model's dictionary")
    assert not (tmp_path / "r").exists()

    old = torch.load(exported, weights_only=False)
    del old["target_dictionary"]
    old_export = str(tmp_path / "old_export.pt")
    torch.save(old, old_export)
    assert decode(data, old_export, tmp_path / "old")["utterances"] == 6
    assert decode(corpus, exported, tmp_path / "same")["utterances"] == 6


def test_antiphase_stereo_is_named_in_a_warning(tmp_path, plain_ctc, corpus, capsys):
    """Issue 17, item 9c: channels in opposite phase mix down to silence; ordinary stereo does not warn."""
    data = copy_manifest(corpus, str(tmp_path / "data"))
    x = _noise(_size(data, 1))
    antiphase = _replace_audio(data, 1, np.stack([x, -x], axis=1), name="antiphase.flac")
    _replace_audio(data, 4, _noise(_size(data, 4), channels=2, seed=3), name="stereo.flac")
    assert decode(data, plain_ctc, tmp_path / "r")["utterances"] == 6
    warnings = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith(f"{data}/test.tsv:3: {antiphase}: its 2 channels mix down to silence (channels in "
                                "opposite phase?); the model decodes the mix-down")


def test_mixdown_loss():
    x = _noise(16000)
    assert mixdown_loss_db(np.stack([x, x], axis=1)) == pytest.approx(0.0, abs=1e-6)
    assert mixdown_loss_db(np.stack([x, _noise(16000, seed=1)], axis=1)) == pytest.approx(3.0, abs=0.2)
    assert mixdown_loss_db(np.stack([x, -x], axis=1)) == float("inf")
    assert mixdown_loss_db(np.stack([x, -0.9 * x], axis=1)) == pytest.approx(10 * np.log10(0.905 / 0.0025), abs=0.01)
