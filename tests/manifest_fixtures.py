"""Fixtures and helpers for the tests of ``manifests/`` (corpus scripts): small espeak-ng corpora generated once per
session, in-process script calls, and checks that a failed run left nothing behind."""
import importlib.util
import os
import re
import shutil
import sys
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile as sf

from manifests import synthesize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: fairseq's own manifest scripts, found without importing fairseq (which takes seconds)
FAIRSEQ_W2V = os.path.join(importlib.util.find_spec("fairseq").submodule_search_locations[0], "examples", "wav2vec")
#: sizes of the session corpora: small enough for seconds, big enough for every intent and several speakers
LIBRI_ARGS = ["--train-utts", "16", "--dev-utts", "4", "--test-utts", "4",
              "--train-speakers", "3", "--dev-speakers", "2", "--test-speakers", "2", "--seed", "7"]
SLURP_ARGS = ["--train-utts", "24", "--synthetic-utts", "6", "--dev-utts", "12", "--test-utts", "12",
              "--train-speakers", "3", "--dev-speakers", "2", "--test-speakers", "2", "--seed", "7"]
LIBRI_SUBSETS = ["train-clean-100", "dev-clean", "test-clean"]

_corpora: Dict[str, str] = {}


def call(module, argv: List[str], capsys) -> Tuple[int, str, str]:
    """Run a script's ``main`` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = 0
    try:
        module.main(module.get_parser().parse_args(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _session_corpus(tmp_path_factory, layout: str, args: List[str]) -> str:
    if layout not in _corpora:
        out = str(tmp_path_factory.mktemp(f"synth-{layout}") / "corpus")
        synthesize.run(synthesize.get_parser().parse_args(["--layout", layout, "--out", out, "--workers", "2"] + args))
        _corpora[layout] = out
    return _corpora[layout]


@pytest.fixture(scope="session")
def libri_corpus(tmp_path_factory) -> str:
    """A synthetic LibriSpeech-layout corpus (train-clean-100 16, dev-clean 4, test-clean 4); do not modify it."""
    return _session_corpus(tmp_path_factory, "librispeech", LIBRI_ARGS)


@pytest.fixture(scope="session")
def slurp_corpus(tmp_path_factory) -> str:
    """A synthetic SLURP-layout corpus (train 24 sentences + 6 synthetic, devel 12, test 12); do not modify it."""
    return _session_corpus(tmp_path_factory, "slurp", SLURP_ARGS)


@pytest.fixture
def libri_copy(libri_corpus, tmp_path) -> str:
    """A private copy of the LibriSpeech-layout corpus, for tests that damage it."""
    return shutil.copytree(libri_corpus, str(tmp_path / "LibriSpeech"))


@pytest.fixture
def slurp_copy(slurp_corpus, tmp_path) -> str:
    """A private copy of the SLURP-layout corpus, for tests that damage it."""
    return shutil.copytree(slurp_corpus, str(tmp_path / "slurp"))


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def snapshot(folder: str) -> Dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes); empty when the folder does not exist."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def assert_one_error(code: int, err: str, *fragments: str) -> str:
    """Exit code != 0 and exactly one ``SCRIPT.py: error: ...`` line on stderr (the script's name first)
    containing every fragment; returns the line from ``error: `` on."""
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    prog = re.match(r"[a-z_]+\.py: (?=error: )", lines[0])
    assert prog, lines[0]
    lines[0] = lines[0][prog.end():]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def first_flac(folder: str) -> str:
    """The first ``.flac`` file under ``folder`` in sorted order."""
    found = sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".flac"))
    return found[0]


def rewrite_audio(path: str, rate: int = 16000, channels: int = 1) -> None:
    """Replace ``path`` by a FLAC file of 0.5 s of a tone with the given sample rate and channel count."""
    t = np.arange(rate // 2) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    sf.write(path, data, rate, subtype="PCM_16", format="FLAC")
