"""The corpora of the experiments, synthesised with espeak-ng and prepared with the project's own corpus scripts
(``manifests/librispeech.py``, ``manifests/slurp.py``: the code a user runs on the real LibriSpeech and SLURP)."""
import json
import os
import shutil
import subprocess
from typing import Dict

from manifests.synthesize import DEFAULTS, SPEAKER_DEFAULTS

from .common import PY, REPO, START_DICT, START_MODEL, log, run
from .processes import run as run_child

#: the subsets of the synthetic corpora (LibriSpeech and SLURP names)
SUBSETS = {
    "librispeech": {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"},
    "slurp": {"train": "train", "valid": "devel", "test": "test"},
}


def _synthesised(stamp: str, settings: dict) -> bool:
    """Whether the corpus of ``stamp`` (written once its synthesis finished) was made with ``settings``."""
    if not os.path.exists(stamp):
        return False
    with open(stamp) as f:
        return json.load(f) == settings


def _stamp(stamp: str, settings: dict) -> None:
    with open(stamp, "w") as f:
        json.dump(settings, f)


def prepare_corpora(work: str, seed: int = 1) -> Dict[str, str]:
    """Synthesise the mini LibriSpeech and mini SLURP corpora (unless already there for this seed) and write
    their manifests with manifests/librispeech.py and manifests/slurp.py. Returns the manifest folders."""
    work = os.path.abspath(work)  # fairseq-hydra-train runs in its hydra folder: the manifests need absolute paths
    corpora = os.path.join(work, "corpora")
    out = {}
    for layout, root_name in (("librispeech", "LibriSpeech"), ("slurp", "slurp")):
        root = os.path.join(corpora, root_name)
        stamp = root + ".done"
        settings = {"seed": seed, **DEFAULTS[layout], **SPEAKER_DEFAULTS}
        if not _synthesised(stamp, settings):
            log(f"synthesising the mini {layout} corpus with espeak-ng ({root})")
            print(run([PY, "manifests/synthesize.py", "--layout", layout, "--out", root, "--seed", str(seed),
                       "--overwrite"]).strip().splitlines()[-1], flush=True)
            _stamp(stamp, settings)
        dest = os.path.join(work, "manifests", layout)
        subsets = SUBSETS[layout]
        # written afresh on every call: --overwrite replaces the manifests (and the start model's dictionary that
        # match_start_dictionary copied there) of an earlier call
        if layout == "librispeech":
            cmd = [PY, "manifests/librispeech.py", root, subsets["train"], subsets["valid"], subsets["test"],
                   "--dest", dest, "--overwrite"]
        else:
            cmd = [PY, "manifests/slurp.py", root, "--dest", dest, "--overwrite"]
        log(f"writing {layout} manifests ({dest})")
        run(cmd, log_file=os.path.join(work, "logs", f"manifests-{layout}.log"))
        out[layout] = dest
    return out


def prepare_unlabeled_corpus(work: str, utts: int, seed: int) -> str:
    """The unlabeled corpus of pre-training (``manifests/unlabeled.py``, synthesised once for these settings);
    returns its folder (it holds the manifests)."""
    corpus = os.path.join(work, "corpus")
    stamp = corpus + ".done"
    settings = {"utts": utts, "seed": seed}
    if not _synthesised(stamp, settings):
        log(f"synthesising the unlabeled corpus ({utts} utterances) in {corpus}")
        out = run_child([PY, "manifests/unlabeled.py", "--out", corpus, "--utts", str(utts), "--seed", str(seed),
                         "--overwrite"], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if out.returncode != 0:
            raise SystemExit(f"manifests/unlabeled.py failed: {out.stderr.strip().splitlines()[-1:]}")
        print(out.stdout.strip(), flush=True)
        _stamp(stamp, settings)
    return corpus


def match_start_dictionary(manifests: Dict[str, str], start: str) -> None:
    """Continuing from the fine-tuned start model (assets/start_model) needs the dictionary it was fine-tuned with
    (its output layer's units) in every manifest; a pre-trained start builds its output layer from the manifest's
    own dictionary, which prepare_corpora wrote."""
    if os.path.abspath(start) == START_MODEL:
        for manifest in manifests.values():
            shutil.copy(START_DICT, os.path.join(manifest, "dict.ltr.txt"))
