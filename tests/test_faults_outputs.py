"""One output rule for every file a command writes (issue 28, items 1-4): fairseq-prune-export (OUTPUT, --plot,
--summary-json), fairseq-prune-onnx and fairseq-prune-infer (the result files and summary.json).

What is not a regular file (a FIFO, a device, a link into /proc/*/fd like /dev/stdout) is never replaced, --force or
not; a symlink is written through to its target and stays a link; an existing side output needs --force like
OUTPUT; a second writer of one file refuses (its lock is held, or the file appeared before the commit); every
destination is checked before any work; a write past ``ulimit -f`` is one line, no traceback, the old file kept.
"""
import fcntl
import json
import os
import resource
import stat
import subprocess

import pytest
import torch

import fairseq_prune  # noqa: F401  (registers our model, task and safe globals)
from fairseq_prune.cli import export as export_cli
from fairseq_prune.cli import onnx as onnx_cli
from fairseq_prune.cli.infer import cli_main as infer_main
from fairseq_prune.io import safe_output
from fault_fixtures import TEST_UTTERANCES
from helpers import VENV_BIN, _env

RESULTS = ["hypo.units", "hypo.word", "ref.units", "ref.word", "summary.json"]


def fails(capsys, cli, prog, *argv) -> str:
    """A command in this process, expected to fail with exit status 2: its one stderr line (no traceback)."""
    with pytest.raises(SystemExit) as e:
        cli([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err[-3000:]
    return lines[0]


def export_fails(capsys, *argv) -> str:
    return fails(capsys, export_cli.cli_main, "fairseq-prune-export", *argv)


def onnx_fails(capsys, *argv) -> str:
    return fails(capsys, onnx_cli.cli_main, "fairseq-prune-onnx", *argv)


def no_work(monkeypatch):
    """Loading a checkpoint or exporting to ONNX fails the test: the refusal must come before any work."""
    def worked(*a, **k):
        raise AssertionError("work was done before the destination was checked")

    monkeypatch.setattr(export_cli, "load_gated", worked)
    monkeypatch.setattr(onnx_cli, "read_exportable", worked)
    monkeypatch.setattr(onnx_cli, "export_onnx", worked)
    monkeypatch.setattr(torch.onnx, "export", worked)
    monkeypatch.setattr("fairseq_prune.inference.loop.read_ctc_checkpoint", worked)


def during_export(monkeypatch, action):
    """Run ``action()`` while export prunes: between its checks and its commit."""
    real = export_cli.prune

    def prune(*a, **k):
        action()
        return real(*a, **k)

    monkeypatch.setattr(export_cli, "prune", prune)


def leftovers(folder) -> list:
    """Temporary and lock files of safe_output's naming in ``folder``."""
    return [n for n in os.listdir(folder) if n.startswith(safe_output.TEMP_PREFIX)]


def hold_lock(path):
    """Take the lock another run writing ``path`` would hold (an open file description of our own)."""
    fd = os.open(safe_output.lock_path(os.path.realpath(path)), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# ---------------------------------------------------------------------------------------------------------------
# item 1: what is not a regular file is never replaced; a symlink stays a link


@pytest.mark.parametrize("command", ["export OUTPUT", "export --plot", "export --summary-json", "onnx"])
def test_fifo_destination_survives_force(command, tmp_path, gated, exported, capsys, monkeypatch):
    fifo = tmp_path / "dest"
    os.mkfifo(fifo)
    no_work(monkeypatch)
    if command == "onnx":
        line = onnx_fails(capsys, exported, fifo, "--force")
    else:
        option = command.split()[1]
        argv = [fifo] if option == "OUTPUT" else [tmp_path / "out.pt", option, fifo]
        line = export_fails(capsys, gated, *argv, "--force")
    assert f"{fifo}: exists and is not a regular file (a FIFO), which is never replaced" in line, line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(os.listdir(tmp_path)) == ["dest"]


def test_device_destination_survives_force(tmp_path, exported, capsys, monkeypatch):
    """A character device (made here with /dev/full's numbers, so that the real one is never at stake)."""
    device = tmp_path / "full"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("no rights to make a device node")
    no_work(monkeypatch)
    line = onnx_fails(capsys, exported, device, "--force")
    assert "exists and is not a regular file (a character device)" in line, line
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_fifo_that_appears_during_the_work_is_not_replaced(tmp_path, gated, capsys, monkeypatch):
    """Checked again at the commit: nothing of this run is left, the FIFO stays."""
    out = tmp_path / "out.pt"
    during_export(monkeypatch, lambda: os.mkfifo(out))
    line = export_fails(capsys, gated, out, "--force", "--summary-json", tmp_path / "s.json")
    assert "exists and is not a regular file (a FIFO)" in line, line
    assert stat.S_ISFIFO(os.lstat(out).st_mode) and sorted(os.listdir(tmp_path)) == ["out.pt"]


def test_summary_json_to_a_stdout_link_is_never_replaced(tmp_path, gated, capsys, monkeypatch):
    """A link into /proc/self/fd (what /dev/stdout is) is refused before any work, even when stdout is a regular
    file; ``--summary-json -`` prints the summary alone on stdout (the table goes to stderr)."""
    link = tmp_path / "stdout"
    os.symlink("/proc/self/fd/1", link)
    with monkeypatch.context() as m:
        no_work(m)
        line = export_fails(capsys, gated, tmp_path / "out.pt", "--summary-json", link, "--force")
    assert f"{link}: leads to /proc/self/fd/1" in line and "(- writes to stdout)" in line, line
    assert os.path.islink(link) and os.readlink(link) == "/proc/self/fd/1"
    export_cli.cli_main([gated, str(tmp_path / "out.pt"), "--summary-json", "-"])
    out, err = capsys.readouterr()
    assert json.loads(out) == torch.load(tmp_path / "out.pt", weights_only=True)["pruning_summary"]
    assert "wrote" in err and sorted(os.listdir(tmp_path)) == ["out.pt", "stdout"]


def test_symlink_destination_is_written_through(tmp_path, gated, capsys):
    """--force onto a symlink replaces the file it leads to (atomically, in that file's folder); the link stays."""
    (tmp_path / "models").mkdir()
    real = tmp_path / "models" / "real.pt"
    real.write_bytes(b"previous model")
    link = tmp_path / "out.pt"
    os.symlink(os.path.join("models", "real.pt"), link)
    export_cli.cli_main([gated, str(link), "--force"])
    assert os.path.islink(link) and os.readlink(link) == os.path.join("models", "real.pt")
    assert "pruning_summary" in torch.load(real, weights_only=True)
    assert sorted(os.listdir(tmp_path)) == ["models", "out.pt"] and os.listdir(tmp_path / "models") == ["real.pt"]
    assert "exists; pass --force" in export_fails(capsys, gated, link)  # still an existing output


def test_result_files_follow_the_rule(tmp_path, plain_ctc, corpus, capsys, monkeypatch):
    """A FIFO among the result files is refused before loading; a symlinked summary.json is written through."""
    results = tmp_path / "r"
    results.mkdir()
    os.mkfifo(results / "hypo.word")
    with monkeypatch.context() as m:
        no_work(m)
        line = fails(capsys, infer_main, "fairseq-prune-infer", corpus, "--path", plain_ctc, "--results-path",
                     results, "--cpu", "--quiet", "--num-workers", "0")
    assert f"{results}/hypo.word: exists and is not a regular file (a FIFO)" in line, line
    os.remove(results / "hypo.word")
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    os.symlink(kept, results / "summary.json")
    infer_main([corpus, "--path", plain_ctc, "--results-path", str(results), "--cpu", "--quiet",
                "--num-workers", "0"])
    assert os.path.islink(results / "summary.json") and json.loads(kept.read_text())["utterances"] == TEST_UTTERANCES
    assert sorted(os.listdir(results)) == RESULTS


# ---------------------------------------------------------------------------------------------------------------
# item 2: side outputs need --force; a second writer refuses


@pytest.mark.parametrize("option", ["--plot", "--summary-json"])
def test_existing_side_output_needs_force(option, tmp_path, gated, capsys, monkeypatch):
    side = tmp_path / ("arch.png" if option == "--plot" else "s.json")
    side.write_text("keep me")
    with monkeypatch.context() as m:
        no_work(m)
        line = export_fails(capsys, gated, tmp_path / "out.pt", option, side)
    assert line == f"fairseq-prune-export: error: {side} exists; pass --force to overwrite it"
    assert side.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == [side.name]
    export_cli.cli_main([gated, str(tmp_path / "out.pt"), option, str(side), "--force"])
    assert side.read_bytes() != b"keep me" and sorted(os.listdir(tmp_path)) == sorted([side.name, "out.pt"])


@pytest.mark.parametrize("command", ["export", "onnx"])
def test_second_writer_refuses_while_the_first_holds_the_lock(command, tmp_path, gated, exported, capsys,
                                                              monkeypatch):
    """Another run is writing OUTPUT (it holds the lock beside it): this one refuses before any work, --force
    or not, and leaves the other's lock alone."""
    out = tmp_path / ("out.onnx" if command == "onnx" else "out.pt")
    fd = hold_lock(out)
    try:
        no_work(monkeypatch)
        line = (onnx_fails if command == "onnx" else export_fails)(capsys, exported if command == "onnx" else gated,
                                                                   out, "--force")
    finally:
        os.close(fd)
    assert f"{out}: another run is writing it now" in line, line
    assert os.listdir(tmp_path) == [os.path.basename(safe_output.lock_path(str(out)))]


def test_second_writer_refuses_at_commit(tmp_path, gated, capsys, monkeypatch):
    """Two exports into a folder neither found: the first takes the lock once it made the folder, while this one
    works; this one refuses when it comes to commit, and none of its outputs is left."""
    folder = tmp_path / "new"
    out = folder / "out.pt"
    held = []
    during_export(monkeypatch, lambda: (folder.mkdir(), held.append(hold_lock(out))))
    try:
        line = export_fails(capsys, gated, out, "--summary-json", folder / "s.json")
    finally:
        os.close(held[0])
    assert f"{out}: another run is writing it now" in line, line
    assert os.listdir(folder) == [os.path.basename(safe_output.lock_path(str(out)))]


def test_file_that_appears_before_the_commit_is_kept(tmp_path, gated, capsys, monkeypatch):
    """Without --force, a file another writer put at OUTPUT while this run worked is neither replaced nor
    removed; the run refuses and its other outputs are not left either."""
    out = tmp_path / "out.pt"
    during_export(monkeypatch, lambda: out.write_bytes(b"the other run's model"))
    line = export_fails(capsys, gated, out, "--summary-json", tmp_path / "s.json")
    assert f"{out}: appeared while this run was writing it" in line, line
    assert out.read_bytes() == b"the other run's model" and sorted(os.listdir(tmp_path)) == ["out.pt"]


def test_lock_of_a_killed_run_is_swept(tmp_path, gated):
    """A lock file no process holds (its run was killed) does not stop the next run, which removes it."""
    out = tmp_path / "out.pt"
    os.close(os.open(safe_output.lock_path(str(out)), os.O_RDWR | os.O_CREAT))
    export_cli.cli_main([gated, str(out)])
    assert os.listdir(tmp_path) == ["out.pt"]


# ---------------------------------------------------------------------------------------------------------------
# item 3: fairseq-prune-onnx checks its destination before the work


@pytest.mark.parametrize("dest, expected", [("/sys/x.onnx", "/sys/x.onnx: cannot create files in /sys ("),
                                            ("/proc/x.onnx", "/proc/x.onnx: cannot create files in /proc (")])
def test_onnx_unwritable_destination_refused_before_work(dest, expected, exported, capsys, monkeypatch):
    no_work(monkeypatch)
    assert expected in onnx_fails(capsys, exported, dest)


# ---------------------------------------------------------------------------------------------------------------
# item 4: the file-size limit (ulimit -f) in a real process


def run_limited(limit: int, prog: str, *argv) -> subprocess.CompletedProcess:
    """``prog`` (a console script of the venv) with its file-size limit at ``limit`` bytes."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([os.path.join(VENV_BIN, prog), *map(str, argv)], env=_env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=limit_file_size)


def one_error_line(p: subprocess.CompletedProcess, prog: str) -> str:
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    assert "Traceback" not in p.stderr, p.stderr[-4000:]
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == p.stderr.strip().splitlines()[-1], p.stderr[-4000:]
    assert errors[0].startswith(f"{prog}: error: "), errors
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "onnx"])
def test_write_past_the_file_size_limit(command, tmp_path, gated, exported):
    """One line naming the file and the cause, no traceback, no new file, no temporary; the old file kept."""
    out = tmp_path / ("out.onnx" if command == "onnx" else "out.pt")
    out.write_bytes(b"previous")
    limit = os.path.getsize(exported) // 4
    if command == "onnx":
        p = run_limited(limit, "fairseq-prune-onnx", exported, out, "--force")
    else:
        p = run_limited(limit, "fairseq-prune-export", gated, out, "--force", "--summary-json", tmp_path / "s.json")
    line = one_error_line(p, f"fairseq-prune-{command}")
    assert line.endswith(f"{out}: cannot write (File too large: the file-size limit (ulimit -f) is {limit} bytes)")
    assert os.listdir(tmp_path) == [out.name] and out.read_bytes() == b"previous"


@pytest.mark.slow
def test_infer_past_the_file_size_limit(tmp_path, plain_ctc, corpus):
    """256 bytes: enough for Python's semaphores (fairseq makes one on import), not for summary.json."""
    results = tmp_path / "r"
    results.mkdir()
    (results / "summary.json").write_text("old")
    p = run_limited(256, "fairseq-prune-infer", corpus, "--path", plain_ctc, "--results-path", results, "--cpu",
                    "--quiet", "--num-workers", "0")
    line = one_error_line(p, "fairseq-prune-infer")
    assert "cannot write (File too large: the file-size limit (ulimit -f) is 256 bytes)" in line, line
    assert os.listdir(results) == ["summary.json"] and (results / "summary.json").read_text() == "old"
