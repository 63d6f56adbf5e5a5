"""manifests/slurp.py on the synthetic SLURP-layout corpus: one row per recording, intent token first, dictionary
with every intent, intent-only labels, sentencepiece units, the inventory JSON, and one test per bad-input case."""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import soundfile as sf

from manifest_fixtures import (
    REPO,
    assert_one_error,
    call,
    read_lines,
    rewrite_audio,
    snapshot,
)
from manifests import slurp

SPLITS = ["train", "devel", "test"]


def jsonl(corpus: str, name: str):
    return [json.loads(line) for line in read_lines(os.path.join(corpus, "dataset", "slurp", name + ".jsonl"))]


def write_jsonl(corpus: str, name: str, records) -> None:
    with open(os.path.join(corpus, "dataset", "slurp", name + ".jsonl"), "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def expected_rows(corpus: str, synthetic: bool = True):
    """(split -> [(audio folder/file, intent)]) in the order SLURP's jsonl files list the recordings."""
    sources = {"train": [("train", "slurp_real")] + ([("train_synthetic", "slurp_synth")] if synthetic else []),
               "devel": [("devel", "slurp_real")], "test": [("test", "slurp_real")]}
    return {split: [(f"{sub}/{rec['file']}", r["intent"]) for name, sub in srcs for r in jsonl(corpus, name)
                    for rec in r["recordings"]] for split, srcs in sources.items()}


@pytest.fixture(scope="module")
def prepared(slurp_corpus, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("slurp-manifests"))
    args = slurp.get_parser().parse_args([slurp_corpus, "--dest", dest])
    lines = slurp.run(args)
    return dest, lines


def test_one_row_per_recording_intent_first(slurp_corpus, prepared):
    dest, _ = prepared
    expected = expected_rows(slurp_corpus)
    assert len(expected["train"]) > len(jsonl(slurp_corpus, "train"))  # several recordings per sentence
    for split in SPLITS:
        tsv = read_lines(os.path.join(dest, f"{split}.tsv"))
        wrd = read_lines(os.path.join(dest, f"{split}.wrd"))
        ltr = read_lines(os.path.join(dest, f"{split}.ltr"))
        assert tsv[0] == os.path.realpath(os.path.join(slurp_corpus, "audio"))
        assert [r.split("\t")[0] for r in tsv[1:]] == [path for path, _ in expected[split]]
        assert len(wrd) == len(ltr) == len(expected[split])
        for row, w, l, (path, intent) in zip(tsv[1:], wrd, ltr, expected[split]):
            assert int(row.split("\t")[1]) == sf.info(os.path.join(tsv[0], path)).frames
            assert w.split()[0] == intent and l.split()[:2] == [intent, "|"]
            assert all(word.isupper() for word in w.split()[1:])
            assert l.endswith(" |")


def test_labels_match_fairseq_post_processing(prepared):
    from fairseq.data.data_utils import post_process

    dest, _ = prepared
    for split in SPLITS:
        wrd = read_lines(os.path.join(dest, f"{split}.wrd"))
        ltr = read_lines(os.path.join(dest, f"{split}.ltr"))
        assert [post_process(line, "letter") for line in ltr] == wrd


def test_dictionary_contains_every_intent(slurp_corpus, prepared):
    from fairseq.data import Dictionary

    dest, _ = prepared
    intents = {r["intent"] for name in ("train", "train_synthetic", "devel", "test") for r in jsonl(slurp_corpus, name)}
    assert len(intents) >= 12
    dict_lines = read_lines(os.path.join(dest, "dict.ltr.txt"))
    symbols = [line.split()[0] for line in dict_lines]
    assert intents <= set(symbols) and "|" in symbols
    assert set(symbols) - intents - {"|"} <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    counts = Counter(u for line in read_lines(os.path.join(dest, "train.ltr")) for u in line.split())
    assert {s: int(c) for s, c in (line.split() for line in dict_lines)} == {s: counts.get(s, 0) for s in symbols}
    values = [int(line.split()[1]) for line in dict_lines]
    assert values == sorted(values, reverse=True)
    d = Dictionary.load(os.path.join(dest, "dict.ltr.txt"))
    for split in SPLITS:
        for line in read_lines(os.path.join(dest, f"{split}.ltr")):
            assert d.unk() not in d.encode_line(line, append_eos=False, add_if_not_exist=False).tolist()


def test_intent_tokens_follow_the_project_pattern(prepared):
    """The corpus script checks intents with fairseq_prune.text's pattern (one definition), and what it writes is
    read back as intents by the same module."""
    from fairseq_prune import text as intent

    assert slurp.INTENT_RE is intent.INTENT_RE
    dest, _ = prepared
    for line in read_lines(os.path.join(dest, "test.wrd")):
        words = line.split()
        assert intent.leading_intent(words) == words[0]
        assert not any(intent.is_intent(w) for w in words[1:])


def test_intent_inventory_json(slurp_corpus, prepared):
    dest, lines = prepared
    with open(os.path.join(dest, "intents.json")) as f:
        inv = json.load(f)
    expected = expected_rows(slurp_corpus)
    assert inv["intents"] == sorted({i for rows in expected.values() for _, i in rows})
    for split in SPLITS:
        recordings = Counter(i for _, i in expected[split])
        assert {i: c[split]["recordings"] for i, c in inv["counts"].items() if c[split]["recordings"]} == recordings
        assert inv["totals"][split]["recordings"] == len(expected[split])
    sentences = Counter(r["intent"] for r in jsonl(slurp_corpus, "devel"))
    assert {i: c["devel"]["utterances"] for i, c in inv["counts"].items() if c["devel"]["utterances"]} == sentences
    assert inv["scenarios"]["alarm"] == sorted(i for i in inv["intents"] if i.startswith("alarm_"))
    assert "skipped: 0" in lines and any(line.split()[:2] == ["train", str(len(expected["train"]))] for line in lines)


def test_no_synthetic_and_intent_only_labels(slurp_corpus, tmp_path, capsys):
    dest = str(tmp_path / "m")
    code, out, err = call(slurp, [slurp_corpus, "--dest", dest, "--no-synthetic", "--labels", "intent"], capsys)
    assert code == 0, err
    expected = expected_rows(slurp_corpus, synthetic=False)
    tsv = read_lines(os.path.join(dest, "train.tsv"))[1:]
    assert [r.split("\t")[0] for r in tsv] == [p for p, _ in expected["train"]]
    assert not any("slurp_synth" in r for r in tsv)
    assert read_lines(os.path.join(dest, "train.wrd")) == [i for _, i in expected["train"]]
    assert read_lines(os.path.join(dest, "train.ltr")) == [f"{i} |" for _, i in expected["train"]]
    symbols = {line.split()[0] for line in read_lines(os.path.join(dest, "dict.ltr.txt"))}
    assert symbols == {i for rows in expected.values() for _, i in rows} | {"|"}


def test_sentencepiece_units(slurp_corpus, tmp_path, capsys):
    from fairseq.data import Dictionary
    from fairseq.data.data_utils import post_process

    dest = str(tmp_path / "spm")
    code, out, err = call(slurp, [slurp_corpus, "--dest", dest, "--unit", "spm", "--vocab-size", "80"], capsys)
    assert code == 0, err
    for name in ("spm.model", "spm.vocab", "dict.spm.txt", "dict.ltr.txt"):
        assert os.path.isfile(os.path.join(dest, name))
    intents = {line.split()[0] for line in read_lines(os.path.join(dest, "train.wrd"))}
    vocab = [line.split("\t")[0] for line in read_lines(os.path.join(dest, "spm.vocab"))]
    assert intents <= set(vocab)  # user-defined symbols
    d = Dictionary.load(os.path.join(dest, "dict.spm.txt"))
    assert len(d) - d.nspecial == len(vocab) - 1  # every piece but <unk>
    for split in SPLITS:
        spm_lines = read_lines(os.path.join(dest, f"{split}.spm"))
        wrd = read_lines(os.path.join(dest, f"{split}.wrd"))
        assert len(spm_lines) == len(wrd) == len(read_lines(os.path.join(dest, f"{split}.tsv"))) - 1
        assert [line.split()[0] for line in spm_lines] == [line.split()[0] for line in wrd]
        assert [post_process(line, "sentencepiece") for line in spm_lines] == wrd
        for line in spm_lines:
            assert d.unk() not in d.encode_line(line, append_eos=False, add_if_not_exist=False).tolist()
    assert "dict.spm.txt:" in out


@pytest.mark.parametrize("argv, fragments", [
    (["--unit", "spm"], ["--vocab-size"]),
    (["--vocab-size", "50"], ["--unit spm"]),
    (["--unit", "spm", "--vocab-size", "50", "--labels", "intent"], ["--labels intent"]),
    (["--unit", "spm", "--vocab-size", "20"], ["--vocab-size 20", "sentencepiece"]),
])
def test_sentencepiece_option_errors(slurp_corpus, tmp_path, capsys, argv, fragments):
    code, _, err = call(slurp, [slurp_corpus, "--dest", str(tmp_path / "d")] + argv, capsys)
    assert_one_error(code, err, *fragments)
    assert not os.path.exists(tmp_path / "d")


def test_normalise_sentence():
    n = slurp.normalise_sentence
    assert n("what's the weather like tomorrow?") == "WHAT'S THE WEATHER LIKE TOMORROW".split()
    assert n("email john@example.com, #work") == "EMAIL JOHN AT EXAMPLECOM HASHTAG WORK".split()
    assert n("wi-fi on/off & 'quoted' \u2019tis") == "WI FI ON OFF AND 'QUOTED' 'TIS".split()
    assert n("wake me at 5 am") == ["WAKE", "ME", "AT", "5", "AM"]  # digits stay, for the caller to report
    assert n(" ... ' ") == []


def test_refuses_a_non_empty_dest_unless_overwrite(slurp_corpus, tmp_path, capsys):
    """A dictionary copied into --dest (the start model's) is not replaced silently by a re-run."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "dict.ltr.txt").write_text("A 1\n")
    argv = [slurp_corpus, "--dest", str(dest), "--splits", "devel"]
    code, _, err = call(slurp, argv, capsys)
    assert_one_error(code, err, str(dest), "not empty", "--overwrite")
    assert snapshot(str(dest)) == {"dict.ltr.txt": b"A 1\n"}
    code, _, err = call(slurp, argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert "devel.tsv" in os.listdir(dest) and (dest / "dict.ltr.txt").read_text() != "A 1\n"


def test_runs_as_a_script(slurp_corpus, tmp_path):
    script = os.path.join(REPO, "manifests", "slurp.py")
    ok = subprocess.run([sys.executable, script, slurp_corpus, "--dest", str(tmp_path / "m"), "--splits", "devel"],
                        capture_output=True, text=True, cwd=str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert sorted(os.listdir(tmp_path / "m")) == ["devel.ltr", "devel.tsv", "devel.wrd", "dict.ltr.txt", "intents.json"]
    bad = subprocess.run([sys.executable, script, str(tmp_path / "none"), "--dest", str(tmp_path / "n")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        f"slurp.py: error: {tmp_path / 'none'}: SLURP folder not found"]


# --------------------------------------------------------------------------------------------- bad input: fatal


def _fatal(capsys, corpus, tmp_path, *fragments, extra=()):
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    (dest / "train.tsv").write_text("OLD\n")
    before = snapshot(str(dest))
    code, _, err = call(slurp, [corpus, "--dest", str(dest), "--overwrite"] + list(extra), capsys)
    assert_one_error(code, err, *fragments)
    assert snapshot(str(dest)) == before and os.listdir(dest) == ["train.tsv"]


def _recording(corpus: str, name: str = "devel", index: int = 0) -> str:
    sub = "slurp_synth" if name == "train_synthetic" else "slurp_real"
    return os.path.join(corpus, "audio", sub, jsonl(corpus, name)[index]["recordings"][0]["file"])


def test_missing_root(tmp_path, capsys):
    code, _, err = call(slurp, [str(tmp_path / "x"), "--dest", str(tmp_path / "d")], capsys)
    assert_one_error(code, err, str(tmp_path / "x"), "not found")
    assert not os.path.exists(tmp_path / "d")


def test_missing_jsonl(slurp_copy, tmp_path, capsys):
    path = os.path.join(slurp_copy, "dataset", "slurp", "test.jsonl")
    os.remove(path)
    _fatal(capsys, slurp_copy, tmp_path, path, "not found")


def test_missing_synthetic_jsonl_unless_excluded(slurp_copy, tmp_path, capsys):
    path = os.path.join(slurp_copy, "dataset", "slurp", "train_synthetic.jsonl")
    os.remove(path)
    _fatal(capsys, slurp_copy, tmp_path, path, "not found")
    assert call(slurp, [slurp_copy, "--dest", str(tmp_path / "ok"), "--no-synthetic"], capsys)[0] == 0


@pytest.mark.parametrize("line, fragments", [
    ('{"slurp_id": 1, "sentence": "hello"', ["not valid JSON (Expecting ',' delimiter at column 36)"]),
    ('{"sentence": "unterminated', ["not valid JSON (Unterminated string starting at column 14)"]),  # not "at at"
    ('["a list"]', ["expected a JSON object"]),
    ('{"sentence": "turn it up", "recordings": [{"file": "a.flac"}]}', ["field 'intent' is missing"]),
    ('{"sentence": "turn it up", "intent": "Audio Volume Up", "recordings": []}',
     ["'Audio Volume Up'", "scenario_action"]),
    ('{"sentence": 5, "intent": "audio_volume_up", "recordings": []}', ["field 'sentence' should be a str"]),
    ('{"sentence": "x", "intent": "audio_volume_up", "recordings": "a.flac"}', ["field 'recordings' should be a list"]),
    ('{"sentence": "x", "intent": "audio_volume_up", "recordings": [{"wer": 0}]}', ["'recordings'[0] has no 'file'"]),
])
def test_malformed_jsonl_line(slurp_copy, tmp_path, capsys, line, fragments):
    records = [json.dumps(r) for r in jsonl(slurp_copy, "devel")]
    records.insert(2, line)
    write_jsonl(slurp_copy, "devel", records)
    where = os.path.join(slurp_copy, "dataset", "slurp", "devel.jsonl") + ":3"
    _fatal(capsys, slurp_copy, tmp_path, where, *fragments)


def test_corrupt_audio(slurp_copy, tmp_path, capsys):
    path = _recording(slurp_copy, "test", 3)
    with open(path, "wb") as f:
        f.write(b"\x00" * 100)
    _fatal(capsys, slurp_copy, tmp_path, path, "cannot read audio")


def test_truncated_audio_with_verify(slurp_copy, tmp_path, capsys):
    path = _recording(slurp_copy, "train_synthetic", 0)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _fatal(capsys, slurp_copy, tmp_path, path, "corrupt audio", extra=["--verify-audio"])


def test_non_16k_audio_is_an_error_or_resampled(slurp_copy, tmp_path, capsys):
    path = _recording(slurp_copy, "devel", 1)
    rewrite_audio(path, rate=8000)
    _fatal(capsys, slurp_copy, tmp_path, path, "8000 Hz", "--resample")
    dest = str(tmp_path / "ok")
    code, _, err = call(slurp, [slurp_copy, "--dest", dest, "--resample"], capsys)
    assert code == 0, err
    converted = os.path.join(os.path.abspath(dest), "converted", "slurp_real", os.path.basename(path))
    rows = dict(r.split("\t") for r in read_lines(os.path.join(dest, "devel.tsv"))[1:])
    assert rows[converted] == "8000" and sf.info(converted).samplerate == 16000


def test_multichannel_audio_is_an_error_or_mixed_down(slurp_copy, tmp_path, capsys):
    path = _recording(slurp_copy, "train", 0)
    rewrite_audio(path, channels=3)
    _fatal(capsys, slurp_copy, tmp_path, path, "3 channels", "--mix-down")
    dest = str(tmp_path / "ok")
    assert call(slurp, [slurp_copy, "--dest", dest, "--mix-down"], capsys)[0] == 0
    converted = os.path.join(os.path.abspath(dest), "converted", "slurp_real", os.path.basename(path))
    assert sf.info(converted).channels == 1
    assert converted in read_lines(os.path.join(dest, "train.tsv"))[1].split("\t")[0]


def test_strict_makes_a_skip_fatal(slurp_copy, tmp_path, capsys):
    os.remove(_recording(slurp_copy, "devel", 0))
    _fatal(capsys, slurp_copy, tmp_path, "unknown recording file", "--strict", extra=["--strict"])


# --------------------------------------------------------------------------------------------- bad input: skipped


def _skipped(capsys, corpus, tmp_path, reason, *where):
    dest = str(tmp_path / "dest")
    code, out, err = call(slurp, [corpus, "--dest", dest], capsys)
    assert code == 0, err
    assert any(line.strip().startswith(reason) and line.endswith(": 1") for line in out.splitlines()), out
    assert "skipped: 1" in out
    for w in where:
        assert w in out
    return dest


def _edit_sentence(corpus: str, index: int, sentence: str) -> str:
    records = jsonl(corpus, "devel")
    records[index]["sentence"] = sentence
    records[index]["recordings"] = records[index]["recordings"][:1]
    write_jsonl(corpus, "devel", records)
    return os.path.join(corpus, "dataset", "slurp", "devel.jsonl") + f":{index + 1}"


def test_unknown_recording_file(slurp_copy, tmp_path, capsys):
    records = jsonl(slurp_copy, "devel")
    records[0]["recordings"].append({"file": "audio-0000000000.flac"})
    write_jsonl(slurp_copy, "devel", records)
    dest = _skipped(capsys, slurp_copy, tmp_path, "unknown recording file", "slurp_real/audio-0000000000.flac",
                    "devel.jsonl:1")
    assert len(read_lines(os.path.join(dest, "devel.tsv"))) - 1 == len(expected_rows(slurp_copy)["devel"]) - 1


def test_recording_listed_twice(slurp_copy, tmp_path, capsys):
    records = jsonl(slurp_copy, "test")
    records[1]["recordings"].append(records[0]["recordings"][0])
    write_jsonl(slurp_copy, "test", records)
    _skipped(capsys, slurp_copy, tmp_path, "recording listed more than once", "test.jsonl:2")


@pytest.mark.parametrize("sentence, reason, shown", [
    ("", "empty transcript", ""),
    ("  ?! ", "empty transcript", ""),
    ("wake me up at 5 am", "characters outside the letter set", "('5')"),
    ("play caf\u00e9 del mar", "characters outside the letter set", "('\u00c9')"),
    ("turn the <unk> on", "transcript with <unk>", ""),
])
def test_unusable_transcripts_are_skipped(slurp_copy, tmp_path, capsys, sentence, reason, shown):
    where = _edit_sentence(slurp_copy, 2, sentence)
    dest = _skipped(capsys, slurp_copy, tmp_path, reason, where, shown)
    rows = read_lines(os.path.join(dest, "devel.tsv"))[1:]
    assert len(rows) == len(expected_rows(slurp_copy)["devel"]) - 1
    # the same recording is fine with intent-only labels: the transcript is not used
    dest2 = str(tmp_path / "intent-only")
    code, out, _ = call(slurp, [slurp_copy, "--dest", dest2, "--labels", "intent"], capsys)
    assert code == 0 and "skipped: 0" in out
    assert len(read_lines(os.path.join(dest2, "devel.tsv"))) - 1 == len(expected_rows(slurp_copy)["devel"])
