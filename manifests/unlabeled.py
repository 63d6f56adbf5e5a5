#!/usr/bin/env python3
"""An unlabeled speech corpus for self-supervised pre-training, synthesised with espeak-ng like the labeled mini
corpora of :mod:`manifests.synthesize`, and its fairseq ``audio_pretraining`` manifests.

Held-out data stays held out: the dev and test subsets of the labeled corpora that ``manifests/synthesize.py``
makes with ``--corpora-seed`` (both layouts, default sizes) are planned again here (text and speakers only, no
audio), and none of their voice+variant pairs and none of their sentences occur in this corpus. The sentences mix
read-speech sentences (LibriSpeech layout's grammar) and spoken commands (SLURP layout's templates, every intent
equally often); each utterance gets one of the remaining speakers, with its own speed, pitch and level.

Layout (the manifests are what fairseq's ``wav2vec_manifest.py`` writes: a root line, then ``path<TAB>frames``)::

    OUT/audio/SPEAKER/SPEAKER-NNNNN.flac
    OUT/train.tsv, OUT/valid.tsv
    OUT/synthesis.json              (settings, espeak-ng version, speakers, hours)

Same seed, same sizes => the same audio bytes.

    python manifests/unlabeled.py --out corpora/unlabeled --utts 20000
"""
import argparse
import json
import os
import random
import time
from dataclasses import asdict
from typing import Dict, List, Set, Tuple

from manifests import synth_text
from manifests.common import SAMPLE_RATE, ManifestError, Staging, run_or_exit, write_lines
from manifests.espeak import Job, espeak_version, run_jobs
from manifests.synthesize import (
    DEFAULTS, PEAK_RANGE, PITCH_RANGE, SPEAKER_DEFAULTS, SPEED_RANGE, VARIANTS, VOICES, Speaker, check_out,
    plan_librispeech, plan_slurp, unique_item
)

#: share of the utterances that are spoken commands (the rest are read-speech sentences)
COMMAND_SHARE = 0.3


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Synthesise an unlabeled corpus for wav2vec2 pre-training (fairseq "
                                            "audio_pretraining manifests), disjoint from the labeled corpora's dev "
                                            "and test speakers and sentences.")
    p.add_argument("--out", required=True, help="corpus folder to create")
    p.add_argument("--seed", type=int, default=1, help="fixes text, speakers and therefore audio (default 1)")
    p.add_argument("--utts", type=int, default=20000, help="training utterances (default 20000)")
    p.add_argument("--valid-utts", type=int, default=300, help="validation utterances (default 300)")
    p.add_argument("--corpora-seed", type=int, default=1,
                   help="seed of the labeled corpora (manifests/synthesize.py --seed) whose dev and test speakers "
                        "and sentences are kept out (default 1)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="synthesis processes (default: CPUs)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists and is not empty")
    return p


def held_out(corpora_seed: int) -> Tuple[Set[str], Set[str]]:
    """espeak-ng voices (``voice+variant``) and sentences of the dev and test subsets of both labeled corpora made
    with ``corpora_seed`` and default sizes (planned, not synthesised)."""
    voices: Set[str] = set()
    sentences: Set[str] = set()
    libri = plan_librispeech(random.Random(corpora_seed), {**DEFAULTS["librispeech"], **SPEAKER_DEFAULTS}, "/")
    for job in libri.jobs:
        if job.path.startswith(("/dev-clean/", "/test-clean/")):
            voices.add(job.voice)
            sentences.add(job.text)
    slurp = plan_slurp(random.Random(corpora_seed), {**DEFAULTS["slurp"], **SPEAKER_DEFAULTS}, "/", 2)
    voice_of = {os.path.basename(job.path): job.voice for job in slurp.jobs}
    for name in ("devel", "test"):  # the jsonl of each held-out split names its sentences and recordings
        for line in slurp.texts[os.path.join("dataset", "slurp", name + ".jsonl")].splitlines():
            record = json.loads(line)
            sentences.add(record["sentence"])
            voices.update(voice_of[r["file"]] for r in record["recordings"])
    return voices, sentences


def held_out_fingerprint(corpora_seed: int) -> str:
    """sha256 of :func:`held_out`'s voices and sentences: a pre-trained model whose provenance records it was
    trained on a corpus that holds out exactly today's dev and test subsets."""
    import hashlib

    voices, sentences = held_out(corpora_seed)
    return hashlib.sha256(json.dumps([sorted(voices), sorted(sentences)]).encode()).hexdigest()


def make_speakers(rng: random.Random, excluded_voices: Set[str]) -> List[Speaker]:
    """One speaker per voice+variant pair that the held-out subsets do not use."""
    pairs = [(v, var, sex) for v in VOICES for var, sex in VARIANTS if f"{v}+{var}" not in excluded_voices]
    return [Speaker(f"U{i:03d}", "unlabeled", voice, variant, sex, rng.randint(*SPEED_RANGE),
                    rng.randint(*PITCH_RANGE), round(rng.uniform(*PEAK_RANGE), 3))
            for i, (voice, variant, sex) in enumerate(pairs)]


def _sentence(rng: random.Random, intents: List[str]) -> str:
    if rng.random() < COMMAND_SHARE:
        return synth_text.command(rng.choice(intents), rng).sentence
    return synth_text.story_sentence(rng)


def plan(rng: random.Random, sizes: Dict[str, int], speakers: List[Speaker], excluded: Set[str],
         root: str) -> Dict[str, List[Job]]:
    """Jobs per split (``sizes``: split -> utterances) with sentences never in ``excluded`` (the held-out ones) and
    as far as the grammar allows not repeated, speakers in turn from one shuffled order; file names count each
    speaker's utterances across all splits."""
    seen = set(excluded)
    intents = synth_text.intents()
    order = list(speakers)
    rng.shuffle(order)
    counts: Dict[str, int] = {}
    splits: Dict[str, List[Job]] = {}
    turn = 0
    for split, n in sizes.items():
        splits[split] = []
        for _ in range(n):
            text = unique_item(rng, lambda r: _sentence(r, intents), str, seen, excluded)
            spk = order[turn % len(order)]
            turn += 1
            counts[spk.id] = counts.get(spk.id, 0) + 1
            path = os.path.join(root, "audio", spk.id, f"{spk.id}-{counts[spk.id]:05d}.flac")
            splits[split].append(Job(text, spk.espeak_voice, spk.speed, spk.pitch, spk.peak, path))
    return splits


def run(args: argparse.Namespace) -> List[str]:
    """Plan, synthesise and write the corpus at once; returns the summary lines."""
    for key in ("utts", "valid_utts", "workers"):
        if getattr(args, key) < 1:
            raise ManifestError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    check_out(args.out, args.overwrite)
    versions = espeak_version()
    import scipy.signal  # noqa: F401  (imported once here, inherited by forked workers)

    started = time.monotonic()
    out = os.path.abspath(args.out)
    excluded_voices, seen = held_out(args.corpora_seed)
    rng = random.Random(args.seed)
    speakers = make_speakers(rng, excluded_voices)
    with Staging(os.path.dirname(out)) as staging:
        root = staging.folder(os.path.basename(out))
        splits = plan(rng, {"train": args.utts, "valid": args.valid_utts}, speakers, seen, root)
        jobs = splits["train"] + splits["valid"]
        frames = run_jobs(jobs, args.workers, lambda p: os.path.join(out, os.path.relpath(p, root)))
        final_root = staging.final_path(os.path.basename(out))
        hours = {name: sum(frames[j.path] for j in js) / SAMPLE_RATE / 3600 for name, js in splits.items()}
        for name, js in splits.items():
            write_lines(os.path.join(root, f"{name}.tsv"), manifest_rows(root, final_root, js, frames))
        with open(os.path.join(root, "synthesis.json"), "w") as f:
            json.dump({"seed": args.seed, "corpora_seed": args.corpora_seed, "utts": args.utts,
                       "valid_utts": args.valid_utts, "command_share": COMMAND_SHARE, "espeak_ng": versions,
                       "hours": {k: round(v, 3) for k, v in hours.items()},
                       "held_out_voices": sorted(excluded_voices),
                       "speakers": [asdict(s) for s in speakers]}, f, indent=1)
    seconds = time.monotonic() - started
    return [f"unlabeled corpus in {out} (seed {args.seed}; dev/test of corpora seed {args.corpora_seed} held out)",
            f"  train {args.utts} utterances, {hours['train']:.2f} h; valid {args.valid_utts}, {hours['valid']:.2f} h; "
            f"{len(speakers)} speakers; {seconds:.1f} s with {args.workers} worker(s)"]


def manifest_rows(staged_root: str, final_root: str, jobs: List[Job], frames: Dict[str, int]) -> List[str]:
    """Manifest lines whose root is where the corpus will be after the staging commits."""
    staged_audio = os.path.join(staged_root, "audio")
    return [os.path.join(final_root, "audio")] + [
        f"{os.path.relpath(j.path, staged_audio)}\t{frames[j.path]}" for j in jobs]


def main(args: argparse.Namespace) -> None:
    run_or_exit(lambda: print("\n".join(run(args))), script=__file__)


if __name__ == "__main__":
    main(get_parser().parse_args())
