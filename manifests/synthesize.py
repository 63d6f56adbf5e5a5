#!/usr/bin/env python3
"""Small speech corpora synthesised with espeak-ng, in LibriSpeech's or SLURP's source layout, so that the real
preparation scripts (:mod:`manifests.librispeech`, :mod:`manifests.slurp`) are what demos and tests run.

A speaker is one espeak-ng voice+variant (``en-us+m3``, ``en-gb-scotland+f2``, ...) with its own speed, pitch and
level; dev and test speakers use voice+variant pairs that no training speaker uses. espeak-ng writes 22,050 Hz
16-bit WAV; every utterance is resampled to 16 kHz with an exact polyphase filter (320/441), scaled to the
speaker's peak level (below 1, so nothing clips) and written as 16-bit FLAC. Same seed, same sizes => same text
and the same audio bytes (espeak-ng is bit-stable; the worker count does not matter).

    python manifests/synthesize.py --layout librispeech --out corpora/LibriSpeech
    python manifests/synthesize.py --layout slurp --out corpora/slurp
"""
import argparse
import functools
import json
import os
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from manifests import synth_text
from manifests.common import SAMPLE_RATE, ManifestError, Staging, check_dest, run_or_exit
from manifests.espeak import Job, espeak_version, run_jobs

#: English voices of espeak-ng 1.51 that take a ``+variant`` (``en-gb+variant`` ignores the variant; ``en`` is
#: the same British voice and does not)
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029", "en-us-nyc")
#: variants (voice quality presets) with their sex as ``espeak-ng --voices=variant`` lists it; novelty variants
#: (whisper, croak, robots) and those that sound the same as another one are left out
VARIANTS = (
    ("m1", "M"), ("m2", "M"), ("m3", "M"), ("m4", "M"), ("m5", "M"), ("m6", "M"), ("m7", "M"), ("m8", "M"),
    ("f1", "F"), ("f2", "F"), ("f3", "F"), ("f4", "F"), ("f5", "F"), ("klatt", "M"), ("klatt2", "M"),
    ("klatt3", "M"), ("klatt4", "M"), ("klatt5", "M"), ("Andy", "M"), ("Annie", "F"), ("linda", "F"),
    ("steph", "F"), ("steph2", "F"), ("steph3", "F"), ("iven", "M"), ("iven2", "M"), ("iven3", "M"),
    ("iven4", "M"), ("john", "M"), ("max", "M"), ("paul", "M"), ("quincy", "M"), ("travis", "M"),
    ("victor", "M"), ("zac", "M"), ("edward", "M"), ("edward2", "M"), ("Gene", "M"), ("Gene2", "M"),
    ("Mike", "M"), ("Michael", "M"), ("Lee", "M"), ("Alex", "M"), ("Alicia", "F"), ("Andrea", "F"),
    ("belinda", "F"), ("benjamin", "M"), ("norbert", "M"), ("shelby", "M"), ("rob", "M"), ("aunty", "F"),
    ("adam", "M"), ("anika", "F"), ("david", "M"), ("robert", "M"),
)
SPEED_RANGE = (140, 190)  # words per minute (espeak-ng default 175)
PITCH_RANGE = (25, 75)  # 0-99 (default 50)
PEAK_RANGE = (0.35, 0.9)  # peak sample level after scaling

LIBRI_SUBSETS = ("train-clean-100", "dev-clean", "test-clean")
#: dev and test sets large enough to tell methods apart (>= 800 utterances and 40 voices each: one standard error of
#: an intent accuracy near 90% is about 1 point); slurp sentences get 1-2 recordings (560 sentences: ~840)
DEFAULTS = {
    "librispeech": dict(train_utts=3600, dev_utts=840, test_utts=840, synthetic_utts=0),
    "slurp": dict(train_utts=2000, dev_utts=560, test_utts=560, synthetic_utts=200),
}
T = TypeVar("T")
#: draws of :func:`unique_item` before it gives up on finding an allowed sentence
STRICT_TRIES = 20000
SPEAKER_DEFAULTS = dict(train_speakers=200, dev_speakers=40, test_speakers=40)


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str
    voice: str
    variant: str
    sex: str
    speed: int
    pitch: int
    peak: float

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}"

    def describe(self) -> str:
        return f"espeak-ng -v {self.espeak_voice} -s {self.speed} -p {self.pitch}"


@dataclass
class Plan:
    """Everything to write for a corpus: audio jobs and text files (relative path -> content)."""

    jobs: List[Job] = field(default_factory=list)
    texts: Dict[str, str] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)  # split -> recordings


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Synthesise a small speech corpus with espeak-ng in LibriSpeech's or "
                                            "SLURP's source layout.")
    p.add_argument("--layout", required=True, choices=("librispeech", "slurp"))
    p.add_argument("--out", required=True, help="corpus folder to create (the LibriSpeech root or SLURP checkout)")
    p.add_argument("--seed", type=int, default=1, help="fixes text, speakers and therefore audio (default 1)")
    p.add_argument("--train-utts", type=int, default=None,
                   help="training sentences (default: librispeech 3600, slurp 2000 with 1-2 recordings each)")
    p.add_argument("--dev-utts", type=int, default=None, help="dev sentences (default: librispeech 840, slurp 560)")
    p.add_argument("--test-utts", type=int, default=None, help="test sentences (default: librispeech 840, slurp 560)")
    p.add_argument("--synthetic-utts", type=int, default=None,
                   help="slurp: sentences of train_synthetic.jsonl, one slurp_synth recording each (default 200)")
    p.add_argument("--max-recordings", type=int, default=2,
                   help="slurp: each sentence gets 1..N recordings by different speakers (default 2)")
    p.add_argument("--train-speakers", type=int, default=SPEAKER_DEFAULTS["train_speakers"])
    p.add_argument("--dev-speakers", type=int, default=SPEAKER_DEFAULTS["dev_speakers"])
    p.add_argument("--test-speakers", type=int, default=SPEAKER_DEFAULTS["test_speakers"])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="synthesis processes (default: CPUs)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists and is not empty")
    return p


# ---------------------------------------------------------------------------------------------- sizes, speakers


def resolve_sizes(args: argparse.Namespace) -> Dict[str, int]:
    """Size flags with the layout's defaults filled in; raises on impossible values."""
    sizes = dict(DEFAULTS[args.layout])
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.layout == "librispeech" and args.synthetic_utts:
        raise ManifestError("--synthetic-utts is for --layout slurp only")
    for key in ("train_speakers", "dev_speakers", "test_speakers"):
        sizes[key] = getattr(args, key)
    for key, value in sizes.items():
        minimum = 0 if key == "synthetic_utts" else 1
        if value < minimum:
            raise ManifestError(f"--{key.replace('_', '-')} must be at least {minimum}, got {value}")
    if args.max_recordings < 1:
        raise ManifestError(f"--max-recordings must be at least 1, got {args.max_recordings}")
    if args.layout == "slurp" and args.max_recordings > min(sizes["train_speakers"], sizes["dev_speakers"],
                                                            sizes["test_speakers"]):
        raise ManifestError("--max-recordings is larger than the number of speakers of a split")
    total = sizes["train_speakers"] + sizes["dev_speakers"] + sizes["test_speakers"]
    if total > len(VOICES) * len(VARIANTS):
        raise ManifestError(f"{total} speakers asked for, at most {len(VOICES) * len(VARIANTS)} voice+variant pairs")
    if args.workers < 1:
        raise ManifestError(f"--workers must be at least 1, got {args.workers}")
    return sizes


def make_speakers(rng: random.Random, sizes: Dict[str, int], id_format: str) -> Dict[str, List[Speaker]]:
    """Speakers per split (``train``/``dev``/``test``), each a distinct voice+variant pair."""
    pairs = [(v, var, sex) for v in VOICES for var, sex in VARIANTS]
    rng.shuffle(pairs)
    numbers = rng.sample(range(100, 10000), len(pairs))
    speakers: Dict[str, List[Speaker]] = {}
    start = 0
    for split in ("train", "dev", "test"):
        n = sizes[f"{split}_speakers"]
        speakers[split] = [
            Speaker(id_format.format(numbers[i]), split, voice, variant, sex, rng.randint(*SPEED_RANGE),
                    rng.randint(*PITCH_RANGE), round(rng.uniform(*PEAK_RANGE), 3))
            for i, (voice, variant, sex) in enumerate(pairs[start:start + n], start)
        ]
        start += n
    return speakers


def unique_item(rng: random.Random, make: Callable[[random.Random], T], key: Callable[[T], str], seen: set,
                forbidden: Optional[set] = None) -> T:
    """An item from ``make(rng)`` whose ``key`` was not produced before in the corpus (``seen``, which grows). After
    50 tries a repeat from ``seen`` is accepted, so that a small grammar cannot loop forever, but never one from
    ``forbidden`` (held-out sentences: pass ``seen`` itself for an item that must be new); when ``make`` keeps
    giving forbidden items, the grammar is exhausted and that is an error."""
    forbidden = set() if forbidden is None else forbidden
    item = None
    for attempt in range(STRICT_TRIES):
        item = make(rng)
        k = key(item)
        if k in forbidden or (k in seen and attempt < 50):
            continue
        seen.add(k)
        return item
    raise ManifestError(f"no unused sentence left after {STRICT_TRIES} tries (the last: {key(item)!r}): the "
                        "grammar is exhausted; ask for fewer sentences")


# ---------------------------------------------------------------------------------------------- LibriSpeech layout


def plan_librispeech(rng: random.Random, sizes: Dict[str, int], root: str) -> Plan:
    """``SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac`` + ``SPEAKER-CHAPTER.trans.txt`` (upper case), plus
    ``SPEAKERS.TXT`` naming each speaker's espeak-ng settings."""
    plan = Plan()
    speakers = make_speakers(rng, sizes, "{}")
    chapter_ids = iter(rng.sample(range(1000, 100000), 2 * sum(len(s) for s in speakers.values())))
    seen: set = set()
    speaker_lines = []
    for split, subset in zip(("train", "dev", "test"), LIBRI_SUBSETS):
        chapters = {s.id: [next(chapter_ids) for _ in range(rng.randint(1, 2))] for s in speakers[split]}
        held_out = seen if split != "train" else None  # dev/test sentences occur nowhere else in the corpus
        sentences = [unique_item(rng, synth_text.story_sentence, str, seen, held_out)
                     for _ in range(sizes[f"{split}_utts"])]
        trans: Dict[Tuple[str, int], List[str]] = defaultdict(list)
        for i, sentence in enumerate(sentences):
            spk = speakers[split][i % len(speakers[split])]
            chapter = rng.choice(chapters[spk.id])
            utt = f"{spk.id}-{chapter}-{len(trans[(spk.id, chapter)]):04d}"
            trans[(spk.id, chapter)].append(f"{utt} {sentence.upper()}")
            path = os.path.join(root, subset, spk.id, str(chapter), utt + ".flac")
            plan.jobs.append(Job(sentence, spk.espeak_voice, spk.speed, spk.pitch, spk.peak, path))
        for (spk_id, chapter), lines in trans.items():
            plan.texts[os.path.join(subset, spk_id, str(chapter), f"{spk_id}-{chapter}.trans.txt")] = "".join(
                line + "\n" for line in lines)
        plan.counts[subset] = len(sentences)
        speaker_lines += [f"{s.id:<5}| {s.sex} | {subset:<16} | {s.describe()}" for s in speakers[split]]
    plan.texts["SPEAKERS.TXT"] = (
        "; synthetic speakers (espeak-ng settings), written by manifests/synthesize.py\n"
        "; ID  |SEX| SUBSET           | NAME\n" + "".join(line + "\n" for line in speaker_lines)
    )
    plan.texts["synthesis.json"] = _settings_json("librispeech", sizes, speakers)
    return plan


# ---------------------------------------------------------------------------------------------- SLURP layout


def _sentence(cmd: synth_text.Command) -> str:
    return cmd.sentence


def _slurp_record(slurp_id: int, cmd: synth_text.Command, files: List[str]) -> str:
    record = {
        "slurp_id": slurp_id,
        "sentence": cmd.sentence,
        "sentence_annotation": cmd.annotation,
        "intent": cmd.intent,
        "action": cmd.action,
        "tokens": [{"surface": t, "id": i, "lemma": t, "pos": ""} for i, t in enumerate(cmd.tokens)],
        "scenario": cmd.scenario,
        "recordings": [{"file": f, "wer": 0.0, "ent_wer": 0.0, "status": "correct"} for f in files],
        "entities": [{"span": span, "type": slot} for slot, span in cmd.entities],
    }
    return json.dumps(record)


def _balanced_intents(rng: random.Random, n: int) -> List[str]:
    """``n`` intents, each intent as often as possible equally, in random order."""
    names = synth_text.intents()
    out: List[str] = []
    while len(out) < n:
        cycle = list(names)
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


def plan_slurp(rng: random.Random, sizes: Dict[str, int], root: str, max_recordings: int) -> Plan:
    """``dataset/slurp/{train,train_synthetic,devel,test}.jsonl`` + ``metadata.json`` and
    ``audio/slurp_real/`` + ``audio/slurp_synth/`` FLAC files."""
    plan = Plan()
    speakers = make_speakers(rng, sizes, "ES{:04d}")
    n_sentences = sum(sizes[k] for k in ("train_utts", "dev_utts", "test_utts", "synthetic_utts"))
    slurp_ids = iter(rng.sample(range(10000, 100000), n_sentences))
    recording_ids = iter(rng.sample(range(1_400_000_000, 1_500_000_000), n_sentences * max_recordings))
    seen: set = set()
    metadata: Dict[str, dict] = {}
    parts = [("train", "train", "train_utts", "slurp_real", max_recordings),
             ("train_synthetic", "train", "synthetic_utts", "slurp_synth", 1),
             ("devel", "dev", "dev_utts", "slurp_real", max_recordings),
             ("test", "test", "test_utts", "slurp_real", max_recordings)]
    for name, split, size_key, audio_dir, most in parts:
        held_out = seen if split != "train" else None  # devel/test sentences occur nowhere else in the corpus
        commands = [unique_item(rng, functools.partial(synth_text.command, intent), _sentence, seen, held_out)
                    for intent in _balanced_intents(rng, sizes[size_key])]
        lines = []
        recordings = 0
        for cmd in commands:
            slurp_id = next(slurp_ids)
            chosen = rng.sample(speakers[split], rng.randint(1, most))
            files = []
            for spk in chosen:
                number = next(recording_ids)
                if audio_dir == "slurp_synth":
                    fname = f"audio--{number}.flac"
                else:
                    fname = f"audio-{number}-headset.flac" if rng.random() < 0.5 else f"audio-{number}.flac"
                files.append(fname)
                plan.jobs.append(Job(cmd.sentence, spk.espeak_voice, spk.speed, spk.pitch, spk.peak,
                                     os.path.join(root, "audio", audio_dir, fname)))
                metadata.setdefault(str(slurp_id), {"sentence": cmd.sentence, "intent": cmd.intent, "recordings": {}})
                metadata[str(slurp_id)]["recordings"][fname] = {"usrid": spk.id, "espeak": spk.describe()}
            recordings += len(files)
            lines.append(_slurp_record(slurp_id, cmd, files))
        plan.texts[os.path.join("dataset", "slurp", name + ".jsonl")] = "".join(line + "\n" for line in lines)
        plan.counts[name] = recordings
    plan.texts[os.path.join("dataset", "slurp", "metadata.json")] = json.dumps(metadata, indent=1) + "\n"
    plan.texts["synthesis.json"] = _settings_json("slurp", sizes, speakers)
    return plan


def _settings_json(layout: str, sizes: Dict[str, int], speakers: Dict[str, List[Speaker]]) -> str:
    return json.dumps({
        "layout": layout,
        "sizes": sizes,
        "espeak_ng": espeak_version(),
        "speakers": [asdict(s) for split in ("train", "dev", "test") for s in speakers[split]],
    }, indent=1) + "\n"


# ---------------------------------------------------------------------------------------------- main


def check_out(out: str, overwrite: bool) -> None:
    """``--out`` is missing or empty, or ``--overwrite`` replaces it."""
    check_dest(out, overwrite, replaces="it")


def run(args: argparse.Namespace) -> List[str]:
    """Plan, synthesise and write the corpus at once; returns the summary lines."""
    sizes = resolve_sizes(args)
    check_out(args.out, args.overwrite)
    espeak_version()
    import scipy.signal  # noqa: F401  (imported once here, inherited by forked workers)

    started = time.monotonic()
    out = os.path.abspath(args.out)
    with Staging(os.path.dirname(out)) as staging:
        root = staging.folder(os.path.basename(out))
        rng = random.Random(args.seed)
        if args.layout == "librispeech":
            plan = plan_librispeech(rng, sizes, root)
        else:
            plan = plan_slurp(rng, sizes, root, args.max_recordings)
        frames = run_jobs(plan.jobs, args.workers, lambda p: os.path.join(out, os.path.relpath(p, root)))
        for rel, text in plan.texts.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
    seconds = time.monotonic() - started
    hours = sum(frames.values()) / SAMPLE_RATE / 3600
    lines = [f"{args.layout} corpus in {out} (seed {args.seed})"]
    lines += [f"  {name:<16} {n:>6} recordings" for name, n in plan.counts.items()]
    lines.append(f"  total {len(plan.jobs)} recordings, {hours:.3f} h of audio, "
                 f"{seconds:.1f} s with {args.workers} worker(s)")
    return lines


def main(args: argparse.Namespace) -> None:
    run_or_exit(lambda: print("\n".join(run(args))), script=__file__)


if __name__ == "__main__":
    main(get_parser().parse_args())
