"""manifests/synthesize.py: determinism (same seed => same bytes, any worker count), both source layouts, held-out
speakers, audio format, text variety, and its errors (nothing half-written)."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
import soundfile as sf

from manifest_fixtures import (
    LIBRI_SUBSETS,
    assert_one_error,
    call,
    read_lines,
    snapshot,
)
from manifests import espeak, synth_text, synthesize

TINY = {
    "librispeech": ["--train-utts", "6", "--dev-utts", "2", "--test-utts", "2",
                    "--train-speakers", "2", "--dev-speakers", "1", "--test-speakers", "1"],
    "slurp": ["--train-utts", "6", "--synthetic-utts", "2", "--dev-utts", "2", "--test-utts", "2",
              "--train-speakers", "2", "--dev-speakers", "2", "--test-speakers", "2"],
}
LETTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")


def generate(layout: str, out: str, *extra: str) -> None:
    argv = ["--layout", layout, "--out", out] + TINY[layout] + list(extra)
    synthesize.run(synthesize.get_parser().parse_args(argv))


def text_files(snap):
    return {k: v for k, v in snap.items() if not k.endswith(".flac")}


@pytest.mark.parametrize("layout", ["librispeech", "slurp"])
def test_same_seed_same_bytes_any_worker_count(layout, tmp_path):
    generate(layout, str(tmp_path / "a"), "--seed", "3", "--workers", "2")
    generate(layout, str(tmp_path / "b"), "--seed", "3", "--workers", "1")
    generate(layout, str(tmp_path / "c"), "--seed", "4", "--workers", "2")
    a, b, c = (snapshot(str(tmp_path / n)) for n in "abc")
    assert sum(k.endswith(".flac") for k in a) >= 10
    assert a == b  # transcripts, jsonl and every FLAC byte: espeak-ng is bit-stable here
    assert text_files(a) != text_files(c)


def test_parse_wav_reads_espeak_output():
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", "hello"], capture_output=True, check=True).stdout
    rate, pcm = espeak.parse_wav(wav)
    assert rate == 22050 and pcm.dtype == np.dtype("<i2") and pcm.size > rate // 4
    with pytest.raises(ValueError):
        espeak.parse_wav(b"RIFF\x00\x00\x00\x00WAVEdata")


def _flacs(folder):
    return sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".flac"))


def _check_audio(paths):
    for path in paths:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "FLAC")
        data, _ = sf.read(path, dtype="int16")
        peak = np.abs(data.astype(np.int32)).max()
        assert 0.3 * 32768 < peak < 32767, path  # scaled to the speaker's level, never clipped


def test_librispeech_layout(libri_corpus):
    assert sorted(n for n in os.listdir(libri_corpus) if os.path.isdir(os.path.join(libri_corpus, n))) == sorted(
        LIBRI_SUBSETS)
    speakers = {}
    sentences = {}
    for subset in LIBRI_SUBSETS:
        flacs = _flacs(os.path.join(libri_corpus, subset))
        assert len(flacs) == {"train-clean-100": 16, "dev-clean": 4, "test-clean": 4}[subset]
        _check_audio(flacs)
        texts = {}
        for flac in flacs:
            spk, chapter, name = flac.split(os.sep)[-3:]
            assert re.fullmatch(rf"{spk}-{chapter}-\d{{4}}\.flac", name)
            trans = os.path.join(os.path.dirname(flac), f"{spk}-{chapter}.trans.txt")
            texts.update(line.split(" ", 1) for line in read_lines(trans))
        assert sorted(texts) == sorted(os.path.basename(f)[:-5] for f in flacs)  # one line per file, no more
        for text in texts.values():
            assert set(text.replace(" ", "")) <= LETTERS and text == text.upper() and len(text.split()) >= 5
        speakers[subset] = {os.path.basename(f).split("-")[0] for f in flacs}
        sentences[subset] = set(texts.values())
    train = speakers["train-clean-100"]
    assert len(train) == 3 and not train & speakers["dev-clean"] and not train & speakers["test-clean"]
    assert not sentences["train-clean-100"] & (sentences["dev-clean"] | sentences["test-clean"])
    with open(os.path.join(libri_corpus, "synthesis.json")) as f:
        settings = json.load(f)
    voices = defaultdict(set)
    for s in settings["speakers"]:
        voices[s["split"]].add((s["voice"], s["variant"]))
    assert not voices["train"] & voices["dev"] and not voices["train"] & voices["test"]
    assert len(read_lines(os.path.join(libri_corpus, "SPEAKERS.TXT"))) == 2 + 7


def test_slurp_layout(slurp_corpus):
    data = os.path.join(slurp_corpus, "dataset", "slurp")
    records = {name: [json.loads(line) for line in read_lines(os.path.join(data, name + ".jsonl"))]
               for name in ("train", "train_synthetic", "devel", "test")}
    assert [len(records[n]) for n in ("train", "train_synthetic", "devel", "test")] == [24, 6, 12, 12]
    with open(os.path.join(data, "metadata.json")) as f:
        metadata = json.load(f)
    speakers = defaultdict(set)
    for name, recs in records.items():
        sub = "slurp_synth" if name == "train_synthetic" else "slurp_real"
        for r in recs:
            assert {"slurp_id", "sentence", "sentence_annotation", "intent", "action", "tokens", "scenario",
                    "recordings", "entities"} <= set(r)
            assert r["intent"] == f"{r['scenario']}_{r['action']}"
            assert [t["surface"] for t in r["tokens"]] == r["sentence"].rstrip("?").split()
            for e in r["entities"]:
                filler = " ".join(r["tokens"][i]["surface"] for i in e["span"])
                assert f"[{e['type']} : {filler}]" in r["sentence_annotation"]
            files = [rec["file"] for rec in r["recordings"]]
            assert 1 <= len(files) <= (1 if name == "train_synthetic" else 2)
            _check_audio(os.path.join(slurp_corpus, "audio", sub, f) for f in files)
            if name != "train_synthetic":
                users = [metadata[str(r["slurp_id"])]["recordings"][f]["usrid"] for f in files]
                assert len(set(users)) == len(users)  # each recording by a different speaker
                speakers[name] |= set(users)
    assert not speakers["train"] & (speakers["devel"] | speakers["test"])
    train_intents = Counter(r["intent"] for r in records["train"])
    assert len(train_intents) >= 12 and max(train_intents.values()) - min(train_intents.values()) <= 1
    assert len({i.split("_")[0] for i in train_intents}) >= 5
    all_sentences = [r["sentence"] for recs in records.values() for r in recs]
    assert len(set(all_sentences)) == len(all_sentences)


def test_commands_make_intent_classification_non_trivial():
    rng = random.Random(0)
    names = synth_text.intents()
    assert len(names) >= 12 and len({n.split("_")[0] for n in names}) >= 5
    cmds = [synth_text.command(names[i % len(names)], rng) for i in range(3000)]
    # the first word alone is a poor classifier: best intent per first word is right for well under half
    by_first = defaultdict(Counter)
    for c in cmds:
        by_first[c.tokens[0]][c.intent] += 1
    assert sum(max(v.values()) for v in by_first.values()) / len(cmds) < 0.5
    # the same words and slot fillers serve several intents
    intents_of = defaultdict(set)
    for c in cmds:
        for w in c.tokens:
            intents_of[w].add(c.intent)
    for word in ("turn", "the", "on", "off", "alarm", "lights", "calendar", "tomorrow", "london"):
        assert len(intents_of[word]) >= 2, word
    assert len({c.sentence for c in cmds}) > 2000
    # minimal pairs: sentences of different intents that differ in one word ("turn the lights on/off/down in ...")
    confusable = set()
    patterns = defaultdict(set)
    for c in cmds:
        for i in range(len(c.tokens)):
            patterns[(tuple(c.tokens[:i]), tuple(c.tokens[i + 1:]))].add(c.intent)
    for found in patterns.values():
        confusable |= {(a, b) for a in found for b in found if a < b}
    assert len(confusable) >= 6, confusable


def test_story_sentences_vary_over_a_few_hundred_words():
    vocabulary = synth_text.story_vocabulary()
    assert 300 <= len(vocabulary) <= 1000
    rng = random.Random(1)
    sentences = [synth_text.story_sentence(rng) for _ in range(1000)]
    assert len(set(sentences)) > 990
    used = {w for s in sentences for w in s.split()}
    assert used <= set(vocabulary) and len(used) > 300
    assert any("'" in s for s in sentences)
    for s in sentences:
        assert 5 <= len(s.split()) <= 16 and set(s.upper().replace(" ", "")) <= LETTERS


# --------------------------------------------------------------------------------------------- errors


def test_refuses_a_non_empty_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["--layout", "librispeech", "--out", str(out)] + TINY["librispeech"]
    code, _, err = call(synthesize, argv, capsys)
    assert_one_error(code, err, str(out), "--overwrite")
    assert snapshot(str(out)) == {"keep.txt": b"mine"}
    code, out_text, err = call(synthesize, argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert "keep.txt" not in os.listdir(out) and "train-clean-100" in os.listdir(out)
    assert "10 recordings" in out_text and not [n for n in os.listdir(tmp_path) if n.startswith(".partial")]


def test_failure_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    real = espeak.synthesize
    calls = []

    def flaky(job):
        calls.append(job)
        if len(calls) == 4:
            raise RuntimeError("espeak-ng crashed")
        return real(job)

    monkeypatch.setattr(espeak, "synthesize", flaky)
    out = tmp_path / "sub" / "corpus"
    code, _, err = call(synthesize, ["--layout", "slurp", "--out", str(out), "--workers", "1"] + TINY["slurp"], capsys)
    line = assert_one_error(code, err, "synthesis failed", "espeak-ng crashed")
    assert re.match(rf"error: {re.escape(str(out))}/audio/slurp_(real|synth)/audio-[-0-9]+(-headset)?\.flac: ", line), line
    assert os.listdir(tmp_path) == []  # neither the corpus, nor its parent, nor a temporary folder


def test_sigterm_stops_workers_and_leaves_nothing(tmp_path):
    """SIGTERM while the worker pool synthesises: one line, exit 143, no worker tracebacks, nothing left."""
    out = tmp_path / "corpus"
    p = subprocess.Popen([sys.executable, synthesize.__file__, "--layout", "librispeech", "--out", str(out),
                          "--workers", "2", "--train-utts", "400"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 120
    while not any(f.endswith(".flac") for _, _, files in os.walk(tmp_path) for f in files):  # half-way
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["synthesize.py: error: stopped by SIGTERM; output not yet complete was removed"]
    assert os.listdir(tmp_path) == []


def test_missing_espeak_ng(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(espeak, "ESPEAK", "espeak-ng-not-installed")
    code, _, err = call(synthesize, ["--layout", "slurp", "--out", str(tmp_path / "c")], capsys)
    assert_one_error(code, err, "espeak-ng-not-installed", "not found", "apt-get install espeak-ng")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, fragment", [
    (["--train-utts", "0"], "--train-utts must be at least 1"),
    (["--synthetic-utts", "5"], "--synthetic-utts is for --layout slurp"),
    (["--train-speakers", "500"], "voice+variant pairs"),
    (["--workers", "0"], "--workers"),
])
def test_bad_sizes(tmp_path, capsys, argv, fragment):
    code, _, err = call(synthesize, ["--layout", "librispeech", "--out", str(tmp_path / "c")] + argv, capsys)
    assert_one_error(code, err, fragment)
    assert os.listdir(tmp_path) == []


def test_defaults_match_the_readme():
    """The README states the default sizes; keep them in step with the code."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(synthesize.__file__)), "manifests", "README.md")).read()
    p = synthesize.get_parser().parse_args(["--layout", "slurp", "--out", "x"])
    assert p.train_speakers == 200 and p.dev_speakers == 40 and p.test_speakers == 40 and p.max_recordings == 2
    assert synthesize.DEFAULTS["librispeech"] == dict(train_utts=3600, dev_utts=840, test_utts=840, synthetic_utts=0)
    assert synthesize.DEFAULTS["slurp"] == dict(train_utts=2000, dev_utts=560, test_utts=560, synthetic_utts=200)
    for fragment in ("3,600", "840", "2,000", "560", "200", "200 / 40 / 40"):
        assert fragment in readme, fragment


def _default_plan(layout: str):
    sizes = {**synthesize.DEFAULTS[layout], **synthesize.SPEAKER_DEFAULTS}
    if layout == "librispeech":
        plan = synthesize.plan_librispeech(random.Random(1), sizes, "/")
        split_of = {j.path: j.path.split("/")[1] for j in plan.jobs}
    else:
        plan = synthesize.plan_slurp(random.Random(1), sizes, "/", 2)
        split_of = {}
        for name in ("train", "train_synthetic", "devel", "test"):
            for line in plan.texts[f"dataset/slurp/{name}.jsonl"].splitlines():
                split_of.update({f"{r['file']}": name for r in json.loads(line)["recordings"]})
        split_of = {j.path: split_of[os.path.basename(j.path)] for j in plan.jobs}
    groups = defaultdict(list)
    for j in plan.jobs:
        groups[split_of[j.path]].append(j)
    return groups


@pytest.mark.parametrize("layout, held_out", [("librispeech", ("dev-clean", "test-clean")),
                                              ("slurp", ("devel", "test"))])
def test_default_eval_sets_can_tell_methods_apart(layout, held_out):
    """The study's bar: dev and test of >= 800 recordings and 40 voices each (planned at the default sizes, seed 1),
    disjoint in voice+variant and in sentences from training and from each other."""
    groups = _default_plan(layout)
    train = [j for name, js in groups.items() if name not in held_out for j in js]
    dev, test = (groups[name] for name in held_out)
    for js in (dev, test):
        assert len(js) >= 800 and len({j.voice for j in js}) == 40
        assert not {j.voice for j in js} & {j.voice for j in train}
        assert not {j.text for j in js} & {j.text for j in train}
    assert not {j.voice for j in dev} & {j.voice for j in test} and not {j.text for j in dev} & {j.text for j in test}
    assert len({j.text for j in dev}) == len({j.text for j in test}) == synthesize.DEFAULTS[layout]["dev_utts"]


def test_unique_item_never_gives_a_held_out_item():
    rng = random.Random(0)
    make = lambda r: r.choice("abc")  # noqa: E731  (a grammar of three sentences)
    seen = {"a", "b"}
    assert [synthesize.unique_item(rng, make, str, seen, {"a", "b"}) for _ in range(5)] == ["c"] * 5
    with pytest.raises(synthesize.ManifestError, match="grammar is exhausted"):
        synthesize.unique_item(rng, make, str, seen, seen)


# The command as `make demo` runs it: main() (run_or_exit installs the parent's SIGTERM handler, which the pool's
# workers inherit) with two workers, a tiny corpus each time. A pool that terminate()s workers blocked on its task
# queue could wait for them forever (a Python-level SIGTERM handler misses a signal that lands just before
# sem_wait); these runs must all end.
_REPEAT = """
import sys
from manifests import synthesize
out, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    synthesize.main(synthesize.get_parser().parse_args(
        ["--layout", "slurp", "--out", out, "--overwrite", "--workers", "2", "--seed", str(i), "--train-utts", "3",
         "--synthetic-utts", "0", "--dev-utts", "1", "--test-utts", "1", "--train-speakers", "2",
         "--dev-speakers", "2", "--test-speakers", "2"]))
"""


@pytest.mark.slow
def test_main_with_two_workers_always_ends(tmp_path):
    runs = 50
    p = subprocess.run([sys.executable, "-c", _REPEAT, str(tmp_path / "corpus"), str(runs)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("slurp corpus in") == runs
    assert sorted(os.listdir(tmp_path)) == ["corpus"]  # no staging folder left behind


@pytest.mark.slow
def test_sigterm_at_any_moment_ends_promptly(tmp_path):
    """SIGTERM at random moments of the command's life (start-up, planning, synthesis, writing, pool shutdown):
    it always ends within a bound, stopped with nothing left, or (signal too late) exit 0 and the corpus."""
    rng = random.Random(0)
    t0 = time.time()  # the start-up (imports) before the command's handler is in place: the moments span it and 4 s
    subprocess.run([sys.executable, synthesize.__file__, "--help"], capture_output=True, check=True, timeout=120)
    startup = time.time() - t0
    for i in range(12):
        out = tmp_path / f"c{i}"
        p = subprocess.Popen([sys.executable, synthesize.__file__, "--layout", "librispeech", "--out", str(out),
                              "--workers", "2", "--train-utts", "40", "--dev-utts", "4", "--test-utts", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.0, startup + 4.0))
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"run {i}: still running 30 s after SIGTERM")
        if p.returncode == 0:
            assert (out / "SPEAKERS.TXT").exists()
        else:  # 143 once the command's handler is in place; before (start-up, imports) the default action
            assert p.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), err
            assert not out.exists()
        assert [n for n in os.listdir(tmp_path) if not n.startswith("c")] == []  # no staging folder


def test_pool_workers_die_by_the_default_sigterm_action(monkeypatch, tmp_path):
    """The root of the hang: a worker forked while the command's SIGTERM handler is installed must not keep that
    Python-level handler (it can miss Pool.terminate()'s signal); it gets SIGTERM's default action."""
    from fairseq_prune.io.signals import sigterm_raises

    monkeypatch.setattr(espeak, "synthesize", lambda job: int(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL))
    jobs = [espeak.Job("x", "en-us", 175, 50, 0.5, str(tmp_path / f"{i}.flac")) for i in range(8)]
    with sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        frames = espeak.run_jobs(jobs, workers=2)
    assert frames == {j.path: 1 for j in jobs}


@pytest.mark.parametrize("after_commit", [False, True])
def test_a_signal_before_the_output_is_complete_removes_it_and_after_stops_nothing(tmp_path, after_commit):
    """Exit 143 means nothing was written, exit 0 a complete output: SIGTERM while writing removes the staged
    corpus; SIGTERM once Staging has moved it into place (the race the random-moment test once hit) keeps it."""
    from fairseq_prune.io import signals as errors, staging as staging_module
    from fairseq_prune.io.signals import run_or_exit

    out = tmp_path / "corpus"

    def body():
        with staging_module.Staging(str(tmp_path)) as st:
            (open(os.path.join(st.folder("corpus"), "SPEAKERS.TXT"), "w")).write("x\n")
            if not after_commit:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    errors.COMPLETED.clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            run_or_exit(body)
    finally:
        errors.COMPLETED.clear()
    assert stopped.value.code == (0 if after_commit else 128 + signal.SIGTERM)
    assert out.exists() == after_commit
    assert [p.name for p in tmp_path.iterdir()] == (["corpus"] if after_commit else [])


def test_a_signal_between_a_complete_output_and_the_exit_stops_nothing(tmp_path):
    """The window the random-moment test hit twice in CI (run 7): the body has returned with its output complete
    and the script is on its way out; the default SIGTERM action restored there killed it (status -15) with the
    corpus in place. A finished corpus script now ignores SIGTERM until it exits 0."""
    code = (
        "import os, signal, sys, time\n"
        "import fairseq_prune.io.signals as errors\n"
        "def body():\n"
        "    errors.COMPLETED.append('/some/corpus')\n"
        "errors.run_or_exit(body, script=sys.modules['__main__'].__file__)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.5)\n"
        "print('exited normally')\n"
    )
    program = tmp_path / "synthesize.py"
    program.write_text(code)
    p = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout.strip()) == (0, "exited normally"), p.stderr


def test_a_caller_of_the_runner_gets_its_sigterm_action_back():
    """Only the program whose own file is ``script`` keeps SIGTERM ignored after a complete output: a caller that
    runs the body in its process (the demo calling a script's main, a test), named or not, gets its action back."""
    from fairseq_prune.io import signals

    def body():
        signals.COMPLETED.append("/some/corpus")

    before = signal.getsignal(signal.SIGTERM)
    try:
        for kwargs in ({}, {"script": synthesize.__file__}, {"prog": "synthesize.py"}):
            signals.run_or_exit(body, **kwargs)
            assert signal.getsignal(signal.SIGTERM) == before, kwargs
    finally:
        signals.COMPLETED.clear()
        signal.signal(signal.SIGTERM, before)
