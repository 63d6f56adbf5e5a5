"""manifests/librispeech.py: identical output to fairseq's wav2vec_manifest.py + libri_labels.py on the synthetic
LibriSpeech-layout corpus, the dictionary, the summary, and one test per bad-input case."""
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import soundfile as sf

from manifest_fixtures import (
    FAIRSEQ_W2V,
    LIBRI_SUBSETS,
    REPO,
    assert_one_error,
    call,
    first_flac,
    read_lines,
    rewrite_audio,
    snapshot,
)
from manifests import librispeech
from fairseq_prune.io.staging import PARTIAL_RE, Staging, sweep_stale_partials

TRAIN = "train-clean-100"


def fairseq_manifests(corpus: str, subset: str, work: str) -> str:
    """fairseq's own scripts on one subset: wav2vec_manifest.py (valid 0, train.tsv renamed) + libri_labels.py."""
    tmp = os.path.join(work, "tmp_" + subset)
    py = sys.executable
    subprocess.run([py, os.path.join(FAIRSEQ_W2V, "wav2vec_manifest.py"), os.path.join(corpus, subset),
                    "--dest", tmp, "--valid-percent", "0"], check=True)
    tsv = os.path.join(work, subset + ".tsv")
    os.replace(os.path.join(tmp, "train.tsv"), tsv)
    subprocess.run([py, os.path.join(FAIRSEQ_W2V, "libri_labels.py"), tsv, "--output-dir", work,
                    "--output-name", subset], check=True)
    return work


def test_identical_to_fairseq_scripts(libri_corpus, tmp_path, capsys):
    dest = str(tmp_path / "ours")
    code, out, err = call(librispeech, [libri_corpus] + LIBRI_SUBSETS + ["--dest", dest], capsys)
    assert code == 0, err
    theirs = str(tmp_path / "fairseq")
    for subset in LIBRI_SUBSETS:
        fairseq_manifests(libri_corpus, subset, theirs)
        for ext in ("tsv", "ltr", "wrd"):
            with open(os.path.join(dest, f"{subset}.{ext}"), "rb") as a, open(
                os.path.join(theirs, f"{subset}.{ext}"), "rb"
            ) as b:
                assert a.read() == b.read(), f"{subset}.{ext} differs from fairseq's"
    # dict.ltr.txt: letter counts of fairseq's train .ltr, by count descending
    counts = Counter(u for line in read_lines(os.path.join(theirs, f"{TRAIN}.ltr")) for u in line.split())
    dict_lines = read_lines(os.path.join(dest, "dict.ltr.txt"))
    assert {line.split()[0]: int(line.split()[1]) for line in dict_lines} == dict(counts)
    values = [int(line.split()[1]) for line in dict_lines]
    assert values == sorted(values, reverse=True)
    assert "|" in counts and set(counts) - {"|"} <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    # nothing else written: no temporary folders left
    assert sorted(os.listdir(dest)) == sorted(
        [f"{s}.{e}" for s in LIBRI_SUBSETS for e in ("tsv", "ltr", "wrd")] + ["dict.ltr.txt"])


def test_dictionary_loads_in_fairseq_and_covers_labels(libri_corpus, tmp_path, capsys):
    from fairseq.data import Dictionary

    dest = str(tmp_path / "m")
    assert call(librispeech, [libri_corpus] + LIBRI_SUBSETS + ["--dest", dest], capsys)[0] == 0
    d = Dictionary.load(os.path.join(dest, "dict.ltr.txt"))
    for line in read_lines(os.path.join(dest, f"{TRAIN}.ltr")):
        ids = d.encode_line(line, append_eos=False, add_if_not_exist=False)
        assert d.unk() not in ids.tolist()


def test_summary_counts_hours_and_rows(libri_corpus, tmp_path, capsys):
    dest = str(tmp_path / "m")
    code, out, err = call(librispeech, [libri_corpus, TRAIN, "dev-clean", "--dest", dest], capsys)
    assert code == 0
    assert err == ""  # stderr is not a terminal here: no progress bar noise
    tsv = read_lines(os.path.join(dest, f"{TRAIN}.tsv"))
    assert tsv[0] == os.path.realpath(os.path.join(libri_corpus, TRAIN))
    hours = sum(int(r.split("\t")[1]) for r in tsv[1:]) / 16000 / 3600
    line = next(line for line in out.splitlines() if line.split()[:1] == [TRAIN])
    assert line.split()[1:] == ["16", "utterances", f"{hours:.3f}", "h"]
    assert "skipped: 0" in out
    assert "dict.ltr.txt: 2" in out and f"from {TRAIN}" in out
    assert len(tsv) - 1 == len(read_lines(os.path.join(dest, f"{TRAIN}.ltr"))) == 16


def test_dict_subset_default_and_flag(libri_corpus, tmp_path, capsys):
    choose = librispeech.choose_dict_subset
    assert choose(["dev-clean", "train-other-500", "train-clean-100"], None) == "train-other-500"
    assert choose(["dev-clean", "test-clean"], None) == "dev-clean"
    dest = str(tmp_path / "m")
    code, out, _ = call(librispeech, [libri_corpus, TRAIN, "dev-clean", "--dest", dest, "--dict-subset", "dev-clean"],
                        capsys)
    assert code == 0 and "from dev-clean" in out
    counts = Counter(u for line in read_lines(os.path.join(dest, "dev-clean.ltr")) for u in line.split())
    assert sum(int(line.split()[1]) for line in read_lines(os.path.join(dest, "dict.ltr.txt"))) == sum(counts.values())
    code, _, err = call(librispeech, [libri_corpus, TRAIN, "--dest", str(tmp_path / "x"), "--dict-subset", "dev-clean"],
                        capsys)
    assert_one_error(code, err, "--dict-subset", "dev-clean")
    assert not os.path.exists(tmp_path / "x")


def test_runs_as_a_script(libri_corpus, tmp_path):
    script = os.path.join(REPO, "manifests", "librispeech.py")
    ok = subprocess.run([sys.executable, script, libri_corpus, "dev-clean", "--dest", str(tmp_path / "m")],
                        capture_output=True, text=True, cwd=str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert "dev-clean" in ok.stdout and os.path.isfile(tmp_path / "m" / "dev-clean.tsv")
    bad = subprocess.run([sys.executable, script, libri_corpus, "dev-other", "--dest", str(tmp_path / "n")],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert bad.returncode == 1
    missing = os.path.join(libri_corpus, "dev-other")
    assert bad.stderr.strip().splitlines() == [f"librispeech.py: error: {missing}: subset folder not found"]


# --------------------------------------------------------------------------------------------- bad input: fatal


def _fatal(capsys, corpus, tmp_path, *fragments, extra=()):
    """Run on the copy; it must fail with one error line and leave an existing destination untouched (even with
    --overwrite)."""
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    (dest / f"{TRAIN}.tsv").write_text("OLD\n")
    before = snapshot(str(dest))
    argv = [corpus] + LIBRI_SUBSETS + list(extra) + ["--dest", str(dest), "--overwrite"]
    code, out, err = call(librispeech, argv, capsys)
    line = assert_one_error(code, err, *fragments)
    assert snapshot(str(dest)) == before, "a failed run changed the destination"
    assert os.listdir(dest) == [f"{TRAIN}.tsv"]
    return line


def test_missing_root(tmp_path, capsys):
    code, _, err = call(librispeech, [str(tmp_path / "nope"), TRAIN, "--dest", str(tmp_path / "d")], capsys)
    assert_one_error(code, err, str(tmp_path / "nope"), "not found")
    assert not os.path.exists(tmp_path / "d")


def test_missing_subset(libri_copy, tmp_path, capsys):
    _fatal(capsys, libri_copy, tmp_path, os.path.join(libri_copy, "dev-other"), "subset folder not found",
           extra=["dev-other"])


def test_subset_without_audio(libri_copy, tmp_path, capsys):
    os.makedirs(os.path.join(libri_copy, "test-other"))
    _fatal(capsys, libri_copy, tmp_path, "test-other", "no .flac files", extra=["test-other"])


def test_corrupt_audio(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    with open(path, "wb") as f:
        f.write(b"this is not a flac file")
    _fatal(capsys, libri_copy, tmp_path, os.path.basename(path), "cannot read audio")


def test_truncated_audio_found_with_verify(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _fatal(capsys, libri_copy, tmp_path, os.path.basename(path), "corrupt audio", extra=["--verify-audio"])


def test_non_16k_audio_is_an_error_or_resampled(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, TRAIN))
    rewrite_audio(path, rate=22050)
    _fatal(capsys, libri_copy, tmp_path, os.path.basename(path), "22050 Hz", "--resample")
    dest = str(tmp_path / "resampled")
    code, out, err = call(librispeech, [libri_copy] + LIBRI_SUBSETS + ["--dest", dest, "--resample"], capsys)
    assert code == 0, err
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(os.path.join(libri_copy, TRAIN)))
    converted = os.path.join(os.path.abspath(dest), "converted", TRAIN, rel)
    rows = dict(line.split("\t") for line in read_lines(os.path.join(dest, f"{TRAIN}.tsv"))[1:])
    assert rows[converted] == str(8000)  # 0.5 s at 16 kHz, absolute path of the converted copy
    info = sf.info(converted)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    assert rel not in rows and len(rows) == 16
    assert not [n for n in os.listdir(dest) if n.startswith(".partial")]


def test_multichannel_audio_is_an_error_or_mixed_down(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "test-clean"))
    rewrite_audio(path, channels=2)
    _fatal(capsys, libri_copy, tmp_path, os.path.basename(path), "2 channels", "--mix-down")
    dest = str(tmp_path / "mixed")
    code, _, err = call(librispeech, [libri_copy, "test-clean", "--dest", dest, "--mix-down"], capsys)
    assert code == 0, err
    converted = [r.split("\t")[0] for r in read_lines(os.path.join(dest, "test-clean.tsv"))[1:] if r.startswith("/")]
    assert len(converted) == 1 and sf.info(converted[0]).channels == 1


def test_duplicate_utterance_id_in_transcript(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    utt = os.path.basename(path)[: -len(".flac")]
    spk, chapter, _ = utt.split("-")
    trans = os.path.join(os.path.dirname(path), f"{spk}-{chapter}.trans.txt")
    with open(trans, "a") as f:
        f.write(f"{utt} A SECOND TEXT\n")
    _fatal(capsys, libri_copy, tmp_path, trans, utt, "already appears")


def test_strict_makes_a_skip_fatal(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    os.remove(path)
    _fatal(capsys, libri_copy, tmp_path, "transcript line without audio", "--strict", extra=["--strict"])


# --------------------------------------------------------------------------------------------- bad input: skipped


def _skipped(capsys, corpus, tmp_path, subset, reason, where):
    dest = str(tmp_path / "dest")
    code, out, err = call(librispeech, [corpus, subset, "--dest", dest], capsys)
    assert code == 0, err
    assert "skipped: 1" in out
    assert any(line.strip().startswith(reason) and line.endswith(": 1") for line in out.splitlines()), out
    assert where in out
    return read_lines(os.path.join(dest, f"{subset}.tsv"))[1:], read_lines(os.path.join(dest, f"{subset}.wrd")), out


def _trans_for(flac: str) -> str:
    spk, chapter = os.path.basename(flac).split("-")[:2]
    return os.path.join(os.path.dirname(flac), f"{spk}-{chapter}.trans.txt")


def _set_transcript(flac: str, text: str) -> str:
    """Replace the transcript of ``flac``; returns the trans.txt path and line number as ``path:line``."""
    utt = os.path.basename(flac)[: -len(".flac")]
    trans = _trans_for(flac)
    lines = read_lines(trans)
    number = next(i for i, line in enumerate(lines, 1) if line.split()[0] == utt)
    lines[number - 1] = f"{utt} {text}".rstrip()
    with open(trans, "w") as f:
        f.write("\n".join(lines) + "\n")
    return f"{trans}:{number}"


def test_transcript_line_without_audio(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    os.remove(path)
    utt = os.path.basename(path)[: -len(".flac")]
    rows, wrd, _ = _skipped(capsys, libri_copy, tmp_path, "dev-clean", "transcript line without audio", utt)
    assert len(rows) == len(wrd) == 3


def test_audio_without_transcript_line(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    utt = os.path.basename(path)[: -len(".flac")]
    trans = _trans_for(path)
    lines = [line for line in read_lines(trans) if line.split()[0] != utt]
    with open(trans, "w") as f:
        f.write("\n".join(lines) + "\n")
    rows, _, _ = _skipped(capsys, libri_copy, tmp_path, "dev-clean", "audio without transcript", path)
    assert len(rows) == 3 and not any(utt in r for r in rows)


def test_audio_without_transcript_file(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    trans = _trans_for(path)
    n_lines = len(read_lines(trans))
    os.remove(trans)
    dest = str(tmp_path / "dest")
    code, out, _ = call(librispeech, [libri_copy, "dev-clean", "--dest", dest], capsys)
    assert code == 0
    assert f"audio without transcript: {n_lines}" in out and f"(no {os.path.basename(trans)})" in out
    assert len(read_lines(os.path.join(dest, "dev-clean.tsv"))) == 1 + 4 - n_lines


def test_empty_transcript(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    where = _set_transcript(path, "")
    rows, wrd, _ = _skipped(capsys, libri_copy, tmp_path, "dev-clean", "empty transcript", where)
    assert len(rows) == 3 and "" not in wrd


def test_characters_outside_the_letter_set(libri_copy, tmp_path, capsys):
    path = first_flac(os.path.join(libri_copy, "dev-clean"))
    where = _set_transcript(path, "WAKE ME AT 5 O'CLOCK caf\u00e9")
    rows, wrd, out = _skipped(capsys, libri_copy, tmp_path, "dev-clean", "characters outside the letter set", where)
    assert "('5acf\u00e9')" in out
    assert len(rows) == 3 and not any("5" in w for w in wrd)


def test_outside_letter_set_reports_the_characters():
    assert librispeech.outside_letter_set(["WAKE", "AT", "5", "caf\u00e9"]) == "5acf\u00e9"
    assert librispeech.outside_letter_set(["IT'S", "FINE"]) == ""


# --------------------------------------------------------------------------------------------- existing dest, kills


def test_refuses_a_non_empty_dest_unless_overwrite(libri_corpus, tmp_path, capsys):
    """A dictionary copied into --dest (the README's start-model step) is not replaced silently by a re-run."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "dict.ltr.txt").write_text("A 1\n")
    code, _, err = call(librispeech, [libri_corpus, "dev-clean", "--dest", str(dest)], capsys)
    assert_one_error(code, err, str(dest), "not empty", "--overwrite")
    assert snapshot(str(dest)) == {"dict.ltr.txt": b"A 1\n"}
    code, _, err = call(librispeech, [libri_corpus, "dev-clean", "--dest", str(dest), "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(dest)) == ["dev-clean.ltr", "dev-clean.tsv", "dev-clean.wrd", "dict.ltr.txt"]
    assert (dest / "dict.ltr.txt").read_text() != "A 1\n"


def _blocking_run(corpus: str, dest: str) -> subprocess.Popen:
    """librispeech.py on ``corpus`` whose first dev-clean file is replaced by a FIFO: the run stops inside its
    staging (opening the FIFO waits for a writer) until a signal arrives. Returns once the staging folder exists."""
    fifo = first_flac(os.path.join(corpus, "dev-clean"))
    os.remove(fifo)
    os.mkfifo(fifo)
    p = subprocess.Popen([sys.executable, os.path.join(REPO, "manifests", "librispeech.py"), corpus] + LIBRI_SUBSETS
                         + ["--dest", dest], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (os.path.isdir(dest) and [n for n in os.listdir(dest) if PARTIAL_RE.match(n)]):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    return p


def test_sigterm_leaves_nothing(libri_copy, tmp_path):
    dest = str(tmp_path / "new" / "dest")
    p = _blocking_run(libri_copy, dest)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["librispeech.py: error: stopped by SIGTERM; output not yet complete was removed"]
    assert not os.path.exists(tmp_path / "new"), "the folders the run created are not removed"


def test_kill_9_leftovers_are_swept_by_the_next_run(libri_corpus, libri_copy, tmp_path):
    dest = str(tmp_path / "dest")
    p = _blocking_run(libri_copy, dest)
    p.kill()
    p.communicate(timeout=60)
    left = [n for n in os.listdir(dest) if n.startswith(".partial-")]
    assert len(left) == 1
    fifo = first_flac(os.path.join(libri_copy, "dev-clean"))
    os.remove(fifo)
    shutil.copy(first_flac(os.path.join(libri_corpus, "dev-clean")), fifo)
    # the same command again: the leftover does not count as content, and is removed
    ok = subprocess.run([sys.executable, os.path.join(REPO, "manifests", "librispeech.py"), libri_copy]
                        + LIBRI_SUBSETS + ["--dest", dest], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"removed {os.path.join(dest, left[0])}: the partial output of an interrupted run" in ok.stdout
    assert sorted(os.listdir(dest)) == sorted([f"{s}.{e}" for s in LIBRI_SUBSETS for e in ("tsv", "ltr", "wrd")]
                                              + ["dict.ltr.txt"])


def test_sweep_removes_only_our_stale_staging_folders(tmp_path):
    live = Staging(str(tmp_path))  # held by this process: in use
    stale = Staging(str(tmp_path))
    fcntl.flock(stale._lock, fcntl.LOCK_UN)  # as if its process had been killed: the lock is free, the folder stays
    look_alikes = [".partial-notours1", ".partial-ab", "partial-abcdefgh"]  # no lock file or another name
    for name in look_alikes:
        os.makedirs(tmp_path / name)
    (tmp_path / ".partial-12345678").mkdir()  # our name, no lock file (e.g. someone else's): kept
    removed = sweep_stale_partials(str(tmp_path))
    assert removed == [os.path.basename(stale.tmp)]
    assert sorted(os.listdir(tmp_path)) == sorted(look_alikes + [".partial-12345678", os.path.basename(live.tmp)])
    live.abort()
    stale.abort()
