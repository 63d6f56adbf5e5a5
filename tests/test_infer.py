"""Decoding: ``fairseq-prune-infer`` and fairseq's own ``examples/speech_recognition/new/infer.py`` (run through
``python -m fairseq_prune.cli.fairseq_infer``) write identical result files and report the same WER, for a
training checkpoint, an exported model, a plain fairseq ``wav2vec_ctc`` checkpoint, and with KenLM beam search;
intent accuracy and transcript WER are what the result files say; bad input ends in one clear error.

Both decoders always run with the same batching (``max_tokens`` / ``batch_size``): with wav2vec2's default
feature extractor, padding changes the outputs (the tests use several padded batches on purpose).

The "trained" checkpoint is stopped after 6 updates on noise: later, a model trained on noise emits only blanks
and every hypothesis would be empty, which would make the comparisons trivial (the tests check they are not).
"""
import dataclasses
import os
import sys

import editdistance
import pytest
import torch

import fairseq_prune  # noqa: F401  (registers our model, task and safe globals)
from fairseq_prune.cli import fairseq_infer as launcher
from fairseq_prune.cli.infer import cli_main, get_parser, main
from fairseq_prune.inference.results import RESULT_FILES
from fairseq_prune.inference.scoring import Scores, score_pairs
from fairseq_prune.text import strip_intent
from helpers import VENV_BIN, copy_manifest, hydra_train, run, write_noise_corpus
from infer_fixtures import (
    fairseq_wer_file,
    read_result_file,
    read_summary,
    write_lm_files,
    write_plain_ctc_checkpoint,
)

INTENTS = ["alarm_set", "play_music"]
N_TEST = 10
MAX_TOKENS = 60000  # 16 kHz samples: 2-5 utterances of 0.5-1.5 s per batch, i.e. padded batches
GATES = "w2v_encoder.w2v_model."


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Noise audio with SLURP-style labels: ``alarm_set``/``play_music`` then two words; 10 test utterances."""
    folder = str(tmp_path_factory.mktemp("intent-corpus"))
    return write_noise_corpus(folder, {"train": 16, "valid": 4, "test": N_TEST}, intents=INTENTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_w2v, corpus) -> str:
    """A wav2vec2_ctc_pruning training checkpoint (with gates) from fairseq-hydra-train, 6 updates."""
    save = tmp_path_factory.mktemp("trained")
    hydra_train("hj_macs", corpus, small_w2v, str(save), "optimization.max_update=6")
    return str(save / "checkpoint_last.pt")


@pytest.fixture(scope="module")
def plain_ctc(tmp_path_factory, small_w2v, corpus) -> str:
    """A checkpoint of fairseq's own wav2vec_ctc model (no fairseq-prune class in it)."""
    return write_plain_ctc_checkpoint(str(tmp_path_factory.mktemp("plain") / "plain_ctc.pt"), small_w2v, corpus)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    return write_lm_files(str(tmp_path_factory.mktemp("lm")), INTENTS)


def fairseq_infer(ckpt: str, data: str, results: str, *overrides: str) -> str:
    """fairseq's infer.py through our launcher, in a subprocess as a user runs it; returns its log."""
    p = run(
        [
            sys.executable, "-m", "fairseq_prune.cli.fairseq_infer",
            "task=audio_finetuning", f"task.data={data}", "task.labels=ltr",
            f"common_eval.path={ckpt}", "dataset.gen_subset=test", f"decoding.results_path={results}",
            "common.cpu=true", "dataset.num_workers=0", *overrides,
        ],
        timeout=300,
    )
    return p.stdout + p.stderr


def ours(ckpt: str, data: str, results: str, *args: str) -> dict:
    """fairseq-prune-infer in this process; returns summary.json."""
    main(get_parser().parse_args(
        [data, "--path", ckpt, "--results-path", results, "--cpu", "--quiet", "--num-workers", "0", *args]
    ))
    return read_summary(results)


def assert_same_files(a: str, b: str) -> None:
    for name in RESULT_FILES:
        with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
            assert fa.read() == fb.read(), f"{name} differs between {a} and {b}"


def assert_nontrivial(results: str) -> None:
    hyps = [text for _, text in read_result_file(os.path.join(results, "hypo.word"))]
    assert len(hyps) == N_TEST
    assert sum(bool(h.strip()) for h in hyps) >= N_TEST // 2, hyps
    assert len(set(hyps)) >= N_TEST // 2, hyps


def assert_same_wer(summary: dict, fairseq_results: str) -> None:
    wer, errors, words = fairseq_wer_file(fairseq_results)
    assert (summary["wer"], summary["word_errors"], summary["ref_words"]) == (wer, errors, words)


def assert_scores_match_files(summary: dict, results: str) -> None:
    """Intent accuracy and both WERs recomputed by hand from hypo.word / ref.word."""
    hyps = read_result_file(os.path.join(results, "hypo.word"))
    refs = read_result_file(os.path.join(results, "ref.word"))
    assert [i for i, _ in hyps] == [i for i, _ in refs]
    assert sorted(i for i, _ in hyps) == list(range(N_TEST))
    errors = words = t_errors = t_words = correct = 0
    for (_, h), (_, r) in zip(hyps, refs):
        h, r = h.split(), r.split()
        errors += editdistance.eval(h, r)
        words += len(r)
        assert r[0] in INTENTS
        correct += int(bool(h) and h[0] == r[0])
        h_t = h[1:] if h and h[0] in INTENTS else h
        t_errors += editdistance.eval(h_t, r[1:])
        t_words += len(r) - 1
    assert summary["utterances"] == N_TEST
    assert (summary["word_errors"], summary["ref_words"]) == (errors, words)
    assert summary["wer"] == pytest.approx(100.0 * errors / words)
    assert (summary["intent_correct"], summary["intent_total"]) == (correct, N_TEST)
    assert summary["intent_accuracy"] == pytest.approx(100.0 * correct / N_TEST)
    assert (summary["transcript_word_errors"], summary["transcript_ref_words"]) == (t_errors, t_words)
    assert summary["transcript_wer"] == pytest.approx(100.0 * t_errors / t_words)


def corpus_audio_seconds(data: str, subset: str = "test") -> float:
    with open(os.path.join(data, f"{subset}.tsv")) as f:
        next(f)
        return sum(int(line.split("\t")[1]) for line in f) / 16000


# ---------------------------------------------------------------------------------------------------------------
# same results as fairseq's infer.py


@pytest.mark.slow
def test_training_checkpoint_matches_fairseq_infer(tmp_path, trained, corpus):
    """Console script vs fairseq's infer.py on a training checkpoint (gates in eval mode), padded batches."""
    fs = str(tmp_path / "fairseq")
    fairseq_infer(trained, corpus, fs, f"dataset.max_tokens={MAX_TOKENS}")
    mine = str(tmp_path / "ours")
    p = run([os.path.join(VENV_BIN, "fairseq-prune-infer"), corpus, "--path", trained, "--results-path", mine,
             "--max-tokens", str(MAX_TOKENS), "--cpu"], timeout=300)
    assert_same_files(mine, fs)
    assert_nontrivial(mine)
    summary = read_summary(mine)
    assert_same_wer(summary, fs)
    assert_scores_match_files(summary, mine)
    assert summary["max_tokens"] == MAX_TOKENS and summary["decoder"] == "viterbi" and summary["lm"] is None
    assert summary["audio_seconds"] == pytest.approx(corpus_audio_seconds(corpus), abs=1e-3)
    assert summary["rtf"] == pytest.approx(summary["wall_seconds"] / summary["audio_seconds"], rel=1e-2, abs=1e-4)
    # the console output ends with the summary line; per-utterance lines and the progress bar go to stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith(f"[test] {N_TEST} utterances | WER {summary['wer']:.2f} ")
    for part in ("intent accuracy", "transcript WER", "audio", "wall", "RTF"):
        assert part in last
    assert "HYPO: " in p.stderr and "REF: " in p.stderr and "decoding test" in p.stderr


@pytest.mark.slow
def test_exported_model_matches_fairseq_infer(tmp_path, trained, corpus):
    """Issue 5, point 3: fairseq's infer.py decodes the exported model and reports the same WER, and writes the same
    hypotheses, as fairseq-prune-infer; the exported model's hypotheses are those of the gated checkpoint."""
    state = torch.load(trained, weights_only=False)
    sd = state["model"]
    sd[GATES + "encoder.layers.0.head_gate.log_alpha"].fill_(-10.0)  # close all heads of layer 0,
    sd[GATES + "encoder.layers.1.ffn_unit_gate.log_alpha"][:64].fill_(-10.0)  # half the FFN units of layer 1
    sd[GATES + "feature_extractor.channel_gates.3.log_alpha"][:8].fill_(-10.0)  # and 8 channels of conv layer 3
    gated = str(tmp_path / "gated.pt")
    torch.save(state, gated)
    exported = str(tmp_path / "exported.pt")
    run([os.path.join(VENV_BIN, "fairseq-prune-export"), gated, exported], timeout=300)
    assert read_ckpt_model_name(exported) == "wav2vec2_ctc_pruning"

    fs = str(tmp_path / "fairseq")
    fairseq_infer(exported, corpus, fs, f"dataset.max_tokens={MAX_TOKENS}")
    mine = str(tmp_path / "ours")
    summary = ours(exported, corpus, mine, "--max-tokens", str(MAX_TOKENS))
    assert_same_files(mine, fs)
    assert_nontrivial(mine)
    assert_same_wer(summary, fs)

    from_gated = str(tmp_path / "gated-results")
    ours(gated, corpus, from_gated, "--max-tokens", str(MAX_TOKENS))
    assert_same_files(from_gated, mine)


def read_ckpt_model_name(path: str) -> str:
    state = torch.load(path, weights_only=False)
    return state["cfg"]["model"]["_name"]


@pytest.mark.slow
def test_plain_wav2vec_ctc_matches_fairseq_infer(tmp_path, plain_ctc, corpus):
    """A checkpoint of fairseq's own wav2vec_ctc, batched by --batch-size (dataset.batch_size for fairseq)."""
    fs = str(tmp_path / "fairseq")
    fairseq_infer(plain_ctc, corpus, fs, "dataset.batch_size=3")
    mine = str(tmp_path / "ours")
    summary = ours(plain_ctc, corpus, mine, "--batch-size", "3")
    assert summary["model"] == "wav2vec_ctc" and summary["batch_size"] == 3
    assert_same_files(mine, fs)
    assert_nontrivial(mine)
    assert_same_wer(summary, fs)


@pytest.mark.slow
def test_beam_search_matches_fairseq_kenlm_decoder(tmp_path, trained, corpus, lm_files):
    """Lexicon beam search with a hand-written ARPA bigram LM: torchaudio's decoder (ours) and fairseq's KenLM
    decoder find the same words; intent accuracy and transcript WER are those of the written files."""
    pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text: pip install -e '.[lm]'")
    arpa, lexicon = lm_files
    fs = str(tmp_path / "fairseq")
    fairseq_infer(trained, corpus, fs, f"dataset.max_tokens={MAX_TOKENS}", "decoding.type=kenlm",
                  f"decoding.lmpath={arpa}", f"decoding.lexicon={lexicon}", "decoding.beam=5",
                  "decoding.lmweight=0.5", "decoding.wordscore=1")
    mine = str(tmp_path / "ours")
    summary = ours(trained, corpus, mine, "--max-tokens", str(MAX_TOKENS), "--kenlm-model", arpa,
                   "--lexicon", lexicon, "--beam", "5", "--lm-weight", "0.5", "--word-score", "1")
    assert summary["decoder"] == "kenlm"
    assert (summary["lm"]["beam"], summary["lm"]["lm_weight"], summary["lm"]["word_score"]) == (5, 0.5, 1.0)
    assert_same_files(mine, fs)
    assert_same_wer(summary, fs)
    assert_scores_match_files(summary, mine)
    with open(lexicon) as f:
        vocabulary = {line.split()[0] for line in f}
    hyps = [text.split() for _, text in read_result_file(os.path.join(mine, "hypo.word"))]
    assert all(w in vocabulary for h in hyps for w in h)
    assert sum(bool(h) for h in hyps) >= N_TEST // 2
    assert 0 < summary["intent_correct"] < N_TEST  # some hypotheses start with the right intent, not all


# ---------------------------------------------------------------------------------------------------------------
# intent accuracy and scores


def test_intent_accuracy_and_transcript_wer_exact(tmp_path, plain_ctc, corpus):
    """A model whose output is always the token ``alarm_set``: every hypothesis is ``alarm_set``, so intent
    accuracy is the share of alarm_set references (every other one), the transcript WER is 100 and fairseq's WER
    counts the intent as a word."""
    state = torch.load(plain_ctc, weights_only=False)
    dictionary = [line.split()[0] for line in open(os.path.join(corpus, "dict.ltr.txt"))]
    target = 4 + dictionary.index("alarm_set")  # fairseq dictionaries start with <s> <pad> </s> <unk>
    state["model"]["w2v_encoder.proj.weight"].zero_()
    bias = torch.full_like(state["model"]["w2v_encoder.proj.bias"], -10.0)
    bias[target] = 10.0
    state["model"]["w2v_encoder.proj.bias"] = bias
    ckpt = str(tmp_path / "always_alarm_set.pt")
    torch.save(state, ckpt)
    summary = ours(ckpt, corpus, str(tmp_path / "out"), "--max-tokens", str(MAX_TOKENS))
    hyps = [text for _, text in read_result_file(str(tmp_path / "out" / "hypo.word"))]
    assert hyps == ["alarm_set"] * N_TEST
    n_alarm = (N_TEST + 1) // 2
    assert (summary["intent_correct"], summary["intent_total"]) == (n_alarm, N_TEST)
    assert summary["intent_accuracy"] == pytest.approx(100.0 * n_alarm / N_TEST)
    assert (summary["transcript_word_errors"], summary["transcript_ref_words"]) == (2 * N_TEST, 2 * N_TEST)
    assert summary["transcript_wer"] == 100.0
    errors = 2 * n_alarm + 3 * (N_TEST - n_alarm)
    assert (summary["word_errors"], summary["ref_words"]) == (errors, 3 * N_TEST)
    assert_scores_match_files(summary, str(tmp_path / "out"))


def test_scores_by_hand():
    pairs = [
        ("alarm_set WAKE ME UP".split(), "alarm_set WAKE ME UP".split()),  # right intent, no errors
        ("play_music WAKE".split(), "alarm_set WAKE ME".split()),  # wrong intent: 1 + 1 deletion
        ("WAKE ME".split(), "alarm_set WAKE ME".split()),  # no intent: 1 deletion; transcript exact
        ([], "play_music".split()),  # empty hypothesis, empty transcript
    ]
    s = score_pairs(pairs)
    assert (s.word_errors, s.ref_words) == (0 + 2 + 1 + 1, 4 + 3 + 3 + 1)
    assert (s.intent_correct, s.intent_total) == (1, 4)
    assert s.intent_accuracy == 25.0
    # transcript: the intent token is removed from references and from hypotheses that start with one
    assert (s.transcript_errors, s.transcript_ref_words) == (0 + 1 + 0 + 0, 3 + 2 + 2 + 0)
    assert s.transcript_wer == pytest.approx(100.0 / 7)
    plain = score_pairs([("A B".split(), "A C".split())])
    assert plain.wer == 50.0 and plain.intent_accuracy is None and plain.transcript_wer is None
    assert list(strip_intent("alarm_set A".split())) == ["A"]
    assert Scores().wer is None


# ---------------------------------------------------------------------------------------------------------------
# bad input


def _drop_last_label(data: str) -> str:
    path = os.path.join(data, "test.ltr")
    lines = open(path).readlines()
    open(path, "w").writelines(lines[:-1])
    return data


BAD_INPUTS = {
    # name: (how to break the input, expected parts of the message)
    "missing checkpoint": (lambda c, d, t: ([d, "--path", str(t / "nope.pt")]), ["nope.pt", "no such checkpoint file"]),
    "pre-training checkpoint": (lambda c, d, t: ([d, "--path", "W2V"]), ["small.pt", "'wav2vec2'", "not a CTC model"]),
    "not a checkpoint": (
        lambda c, d, t: ([d, "--path", os.path.join(d, "test.tsv")]), ["test.tsv", "not a readable fairseq checkpoint"]
    ),
    "missing manifest": (lambda c, d, t: ([d, "--path", c, "--gen-subset", "dev"]), ["dev.tsv", "not found"]),
    "missing label file": (
        lambda c, d, t: ([_rm(d, "test.ltr"), "--path", c]), ["test.ltr", "label file", "not found"]
    ),
    "label count mismatch": (
        lambda c, d, t: ([_drop_last_label(d), "--path", c]),
        ["test.ltr has 9 lines", "test.tsv lists 10 audio files"],
    ),
    "missing dictionary": (lambda c, d, t: ([_rm(d, "dict.ltr.txt"), "--path", c]), ["dict.ltr.txt", "not found"]),
    "dictionary of another model": (
        lambda c, d, t: ([_add_symbol(d), "--path", c]), ["dict.ltr.txt", "the model does not fit", "size mismatch"]
    ),
    "lm without lexicon": (
        lambda c, d, t: ([d, "--path", c, "--kenlm-model", os.path.join(d, "test.tsv")]), ["--lexicon is missing"]
    ),
    "missing kenlm file": (
        lambda c, d, t: ([d, "--path", c, "--kenlm-model", str(t / "lm.bin"), "--lexicon", str(t / "lex.txt")]),
        ["lm.bin", "file not found (--kenlm-model)"],
    ),
}


def _add_symbol(data: str) -> str:
    with open(os.path.join(data, "dict.ltr.txt"), "a") as f:
        f.write("play_games 1\n")
    return data


def _rm(data: str, name: str) -> str:
    os.remove(os.path.join(data, name))
    return data


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_clear_error(case, tmp_path, plain_ctc, small_w2v, corpus, capsys):
    make_args, expected = BAD_INPUTS[case]
    data = copy_manifest(corpus, str(tmp_path / "data"))
    args = [small_w2v if a == "W2V" else a for a in make_args(plain_ctc, data, tmp_path)]
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        cli_main(args + ["--results-path", str(results), "--cpu", "--num-workers", "0", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fairseq-prune-infer: error: "), err[-5:]
    for part in expected:
        assert part in err[-1], (part, err[-1])
    assert not results.exists() or not os.listdir(results)


def test_lexicon_token_not_in_dictionary(tmp_path, plain_ctc, corpus, lm_files, capsys):
    pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text: pip install -e '.[lm]'")
    arpa, _ = lm_files
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("HELLO H E L L O |\nCAFE C A F É |\n")
    with pytest.raises(SystemExit) as e:
        cli_main([corpus, "--path", plain_ctc, "--kenlm-model", arpa, "--lexicon", str(lexicon), "--cpu", "--quiet"])
    assert e.value.code == 2
    assert f"{lexicon}:2: spelling of 'CAFE' uses 'É'" in capsys.readouterr().err


def test_beam_search_without_flashlight_text_fails_clearly(tmp_path, plain_ctc, corpus, lm_files, monkeypatch, capsys):
    """Simulates a missing flashlight-text: the error says what to install, before the model is loaded."""
    arpa, lexicon = lm_files
    for name in [m for m in sys.modules if m == "flashlight" or m.startswith("flashlight.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flashlight", None)  # "import flashlight..." now raises ImportError
    with pytest.raises(SystemExit) as e:
        cli_main([corpus, "--path", plain_ctc, "--kenlm-model", arpa, "--lexicon", lexicon, "--cpu", "--quiet",
                  "--results-path", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "needs the flashlight-text package" in err and "pip install 'fairseq-prune[lm]'" in err
    assert not (tmp_path / "r").exists()


def test_failure_while_decoding_leaves_no_result_files(tmp_path, plain_ctc, corpus):
    """Result files are written under temporary names and renamed at the end: an audio file in the middle of the
    subset that fails only when it is decoded (a truncated FLAC: its header reads) leaves neither partial result
    files nor temporary files."""
    data = copy_manifest(corpus, str(tmp_path / "data"))
    flac = os.path.join(data, "test_5.flac")
    with open(flac, "rb") as f:
        head = f.read(os.path.getsize(flac) // 2)
    with open(flac, "wb") as f:
        f.write(head)
    results = tmp_path / "results"
    with pytest.raises(Exception, match="test_5.flac"):
        ours(plain_ctc, data, str(results), "--batch-size", "2")
    assert not results.exists()  # the folder the run made is gone too
    results.mkdir()
    with pytest.raises(Exception, match="test_5.flac"):
        ours(plain_ctc, data, str(results), "--batch-size", "2")
    assert os.listdir(results) == []  # a folder that was there stays


# ---------------------------------------------------------------------------------------------------------------
# the launcher's workarounds, one by one


def test_launcher_config_corrections():
    original = {
        "defaults": [{"task": None}, {"model": None}],
        "hydra": {"run": {"dir": "${common_eval.results_path}/${dataset.gen_subset}"}},
        "common": {"user_dir": "/private/home/someone/fairseq-py/examples/data2vec"},
        "dataset": {"max_tokens": 3000000, "gen_subset": "test"},
        "decoding": {"beam": 5, "type": "viterbi"},
    }
    cfg = launcher.corrected_infer_config(original, "/pkg/fairseq_prune", "/tmp/x")
    assert cfg["defaults"] == [launcher.SCHEMA_NAME, "_self_", {"task": None}, {"model": None}]
    assert cfg["common"]["user_dir"] == "/pkg/fairseq_prune"
    assert cfg["dataset"] == {"max_tokens": 3000000, "gen_subset": "test", "required_batch_size_multiple": 1}
    assert cfg["decoding"] == {"beam": 5, "type": "viterbi", "results_path": "/tmp/x"}
    assert cfg["hydra"]["run"]["dir"] == "${decoding.results_path}" and cfg["hydra"]["job"]["chdir"] is False
    assert original["defaults"] == [{"task": None}, {"model": None}]  # the input is not modified


def test_launcher_dataclass_patch_is_scoped():
    original = dataclasses.dataclass

    @original
    class Inner:
        x: list = dataclasses.field(default_factory=lambda: [1])

    with pytest.raises(ValueError, match="mutable default"):
        @dataclasses.dataclass
        class Rejected:
            inner: Inner = Inner()

    with launcher.dataclass_instance_defaults_allowed():
        @dataclasses.dataclass
        class Outer:
            inner: Inner = Inner()

    assert dataclasses.dataclass is original
    a, b = Outer(), Outer()
    assert a.inner == Inner() and a.inner is not b.inner  # each instance gets its own copy


def test_fairseq_infer_module_imports_through_the_launcher(tmp_path):
    infer = launcher.import_fairseq_infer(tmp_path)
    assert infer.__name__ == "examples.speech_recognition.new.infer"
    assert os.path.realpath(infer.__file__).startswith(str(launcher.fairseq_examples_dir()))
    cfg = infer.InferConfig()
    assert cfg.decoding.type == "viterbi" and cfg.dataset.required_batch_size_multiple == 8
