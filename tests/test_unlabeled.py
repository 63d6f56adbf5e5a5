"""manifests/unlabeled.py: the pre-training corpus is disjoint from the labeled corpora's dev and test speakers and
sentences, its manifests are what fairseq's audio_pretraining reads, it is deterministic, and bad input leaves
nothing behind."""
import json
import os
import random

import soundfile as sf

from manifest_fixtures import assert_one_error, call, snapshot
from manifests import synthesize, unlabeled

TINY = ["--utts", "40", "--valid-utts", "6", "--workers", "2"]


def make(out, *extra):
    return unlabeled.run(unlabeled.get_parser().parse_args(["--out", str(out)] + TINY + list(extra)))


def read_manifest(path):
    with open(path) as f:
        root, *rows = f.read().splitlines()
    return root, [row.split("\t") for row in rows]


def test_manifests_list_every_file_with_its_frames(tmp_path):
    make(tmp_path / "u")
    seen = set()
    for split, n in (("train", 40), ("valid", 6)):
        root, rows = read_manifest(tmp_path / "u" / f"{split}.tsv")
        assert root == str(tmp_path / "u" / "audio") and len(rows) == n
        for rel, frames in rows:
            info = sf.info(os.path.join(root, rel))
            assert info.samplerate == 16000 and info.channels == 1 and info.frames == int(frames) > 8000
            seen.add(rel)
    assert len(seen) == 46  # train and valid share no file


def test_no_held_out_speaker_or_sentence_of_the_labeled_corpora(tmp_path):
    voices, sentences = unlabeled.held_out(corpora_seed=1)
    # the labeled corpora's own dev/test speakers (40 + 40, the same pairs in both layouts) and sentences
    assert len(voices) == 80 and len(sentences) == 2 * 840 + 2 * 560
    rng = random.Random(1)
    sizes = {**synthesize.DEFAULTS["librispeech"], **synthesize.SPEAKER_DEFAULTS}
    speakers = synthesize.make_speakers(rng, sizes, "{}")
    assert {s.espeak_voice for s in speakers["dev"] + speakers["test"]} == voices
    make(tmp_path / "u")
    settings = json.load(open(tmp_path / "u" / "synthesis.json"))
    used = {f"{s['voice']}+{s['variant']}" for s in settings["speakers"]}
    assert len(used) == 8 * 55 - 80 and not used & voices
    jobs = unlabeled.plan(random.Random(5), {"train": 500}, unlabeled.make_speakers(random.Random(5), voices),
                          set(sentences), "/x")["train"]
    assert not {j.text for j in jobs} & sentences
    assert any("?" in j.text or j.text.split()[0] in ("please", "set", "turn") for j in jobs)  # commands too


def test_same_seed_same_bytes(tmp_path):
    make(tmp_path / "a", "--seed", "3")
    make(tmp_path / "b", "--seed", "3", "--workers", "1")
    make(tmp_path / "c", "--seed", "4")
    a, b, c = (snapshot(str(tmp_path / n)) for n in "abc")
    strip = lambda s: {k: v for k, v in s.items() if not k.endswith(".tsv")}  # noqa: E731  (roots differ)
    assert strip(a) == strip(b) and strip(a) != strip(c)


def test_refuses_a_non_empty_out_and_bad_sizes(tmp_path, capsys):
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "keep.txt").write_text("mine")
    code, _, err = call(unlabeled, ["--out", str(tmp_path / "u")] + TINY, capsys)
    assert_one_error(code, err, str(tmp_path / "u"), "--overwrite")
    assert snapshot(str(tmp_path / "u")) == {"keep.txt": b"mine"}
    code, _, err = call(unlabeled, ["--out", str(tmp_path / "v"), "--utts", "0"], capsys)
    assert_one_error(code, err, "--utts")
    assert not (tmp_path / "v").exists()
