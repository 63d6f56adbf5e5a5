"""Helpers shared by the corpus scripts: audio checks and conversion, letter labels, fairseq
dictionaries, skip bookkeeping, progress bars and summaries, and the scripts' ``--dest``. Errors, signals and
all-or-nothing output are the plugin's own (:mod:`fairseq_prune.io.signals`, :mod:`fairseq_prune.io.staging`): a
refusal is a :class:`ManifestError`, a :class:`~fairseq_prune.io.errors.PluginError` like every other."""
import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import soundfile as sf
from tqdm import tqdm

from fairseq_prune.io.errors import PluginError
from fairseq_prune.io.signals import run_or_exit  # noqa: F401  (the scripts' runner)
from fairseq_prune.io.staging import Staging, check_dest
from fairseq_prune.text import INTENT_RE  # noqa: F401  (how an intent token is spelled)

#: the sample rate every manifest row must have
SAMPLE_RATE = 16000
#: characters allowed in transcript words (the project's letter set)
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
#: word boundary symbol of ``.ltr`` labels
WORD_BOUNDARY = "|"
#: how many examples of each skip reason a summary lists
SUMMARY_EXAMPLES = 5


class ManifestError(PluginError):
    """Bad input that stops a corpus script: the message names the file (and line or field) and what is wrong."""


def add_dest_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dest`` and ``--overwrite`` of the manifest scripts (:func:`check_manifest_dest` checks them)."""
    parser.add_argument("--dest", required=True,
                        help="output folder (created if missing; must be empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a --dest that is not empty, replacing its files of the same names "
                             "(a dict.ltr.txt copied there too)")


def check_manifest_dest(args: argparse.Namespace) -> None:
    check_dest(args.dest, args.overwrite, replaces="its files of the same names")


def progress(items: Sequence, desc: str, unit: str = "file", total: Optional[int] = None):
    """A tqdm progress bar on stderr; disabled when stderr is not a terminal, so logs stay readable."""
    return tqdm(items, desc=desc, unit=unit, total=total, disable=None, file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class AudioPolicy:
    """What to do with audio that is not 16 kHz mono, and whether to decode every file completely."""

    resample: bool = False
    mix_down: bool = False
    verify: bool = False


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int

    def conversions(self) -> List[str]:
        """What has to change for this file to be 16 kHz mono (empty when nothing)."""
        todo = []
        if self.sample_rate != SAMPLE_RATE:
            todo.append(f"resample {self.sample_rate} -> {SAMPLE_RATE} Hz")
        if self.channels != 1:
            todo.append(f"mix down {self.channels} channels")
        return todo


def inspect_audio(path: str, policy: AudioPolicy) -> AudioInfo:
    """Read ``path``'s header (and with ``policy.verify`` all its samples). Raises :class:`ManifestError` for an
    unreadable or corrupt file, and for a sample rate or channel count the policy does not allow converting."""
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/OSError depending on the problem
        raise ManifestError(f"{path}: cannot read audio ({_one_line(e)})") from None
    result = AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))
    if policy.verify:
        _verify_decode(path, result.frames)
    if result.sample_rate != SAMPLE_RATE and not policy.resample:
        raise ManifestError(
            f"{path}: sample rate is {result.sample_rate} Hz, expected {SAMPLE_RATE} Hz "
            "(pass --resample to resample it with torchaudio)"
        )
    if result.channels != 1 and not policy.mix_down:
        raise ManifestError(
            f"{path}: audio has {result.channels} channels, expected mono (pass --mix-down to average the channels)"
        )
    return result


def _verify_decode(path: str, frames: int) -> None:
    """Decode the whole file; a decoding error or fewer samples than the header promises means corrupt audio."""
    try:
        data, _ = sf.read(path, dtype="int16", always_2d=True)
    except Exception as e:
        raise ManifestError(f"{path}: corrupt audio, decoding failed ({_one_line(e)})") from None
    if data.shape[0] != frames:
        raise ManifestError(f"{path}: corrupt audio, the header says {frames} samples but {data.shape[0]} decode")


def convert_audio(src: str, dst: str) -> int:
    """Write ``src`` as 16 kHz mono 16-bit FLAC to ``dst`` (channels averaged, resampled with torchaudio);
    returns the number of samples written."""
    import numpy as np
    import torch
    import torchaudio.functional as AF

    try:
        data, rate = sf.read(src, dtype="float32", always_2d=True)
    except Exception as e:
        raise ManifestError(f"{src}: corrupt audio, decoding failed ({_one_line(e)})") from None
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, SAMPLE_RATE).numpy()
    mono = np.clip(mono, -1.0, 32767 / 32768)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    sf.write(dst, mono, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return int(mono.shape[0])


def add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resample``, ``--mix-down`` and ``--verify-audio`` of the manifest scripts (:func:`audio_policy`)."""
    parser.add_argument("--resample", action="store_true",
                        help="resample non-16 kHz audio with torchaudio into DEST/converted/ (default: error)")
    parser.add_argument("--mix-down", action="store_true",
                        help="average multi-channel audio into mono in DEST/converted/ (default: error)")
    parser.add_argument("--verify-audio", action="store_true",
                        help="decode every file completely (finds truncated files; default: read headers only)")


def audio_policy(args: argparse.Namespace) -> AudioPolicy:
    """The :class:`AudioPolicy` of the options :func:`add_audio_arguments` added."""
    return AudioPolicy(resample=args.resample, mix_down=args.mix_down, verify=args.verify_audio)


def audio_row(path: str, rel: str, converted: Tuple[str, str], policy: AudioPolicy, skips: "Skips",
              staging: "Staging") -> Optional[Tuple[str, int]]:
    """The ``.tsv`` path and sample count of audio file ``path``, listed as ``rel`` when it is 16 kHz mono. Other
    audio is converted to FLAC at ``converted`` = (folder, name), both relative to the destination (the folder
    is staged as a whole; the name's extension becomes ``.flac``), and listed by its final path. ``None`` (a
    skip) for a file without samples."""
    info = inspect_audio(path, policy)
    if info.frames == 0:
        skips.add("audio without samples", path)
        return None
    if not info.conversions():
        return rel, info.frames
    folder, name = converted
    flac = os.path.splitext(name)[0] + ".flac"
    frames = convert_audio(path, os.path.join(staging.folder(folder), flac))
    return staging.final_path(os.path.join(folder, flac)), frames


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ----------------------------------------------------------------------------------------------- labels


def outside_letter_set(words: Iterable[str]) -> str:
    """The characters of ``words`` outside the letter set, sorted and joined (empty when all are letters)."""
    return "".join(sorted({c for w in words for c in w} - LETTERS))


def letter_units(words: Sequence[str], intent: Optional[str] = None) -> str:
    """The ``.ltr`` line of ``words``: letters separated by spaces and ``|`` after every word, optionally led by an
    intent token and its own ``|`` (``alarm_set | W A K E | M E |``)."""
    units: List[str] = []
    if intent is not None:
        units += [intent, WORD_BOUNDARY]
    for word in words:
        units.extend(word)
        units.append(WORD_BOUNDARY)
    return " ".join(units)


def count_units(lines: Iterable[str]) -> Counter:
    """How often each space-separated unit occurs in label lines."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(line.split())
    return counts


def dictionary_lines(counts: Counter, extra: Iterable[str] = ()) -> List[str]:
    """fairseq ``Dictionary`` lines (``symbol count``), by count descending, ties by symbol (code point order);
    ``extra`` symbols missing from ``counts`` are listed with count 0 at the end."""
    merged = Counter(counts)
    for symbol in extra:
        merged.setdefault(symbol, 0)
    return [f"{s} {c}" for s, c in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))]


def write_lines(path: str, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


# ----------------------------------------------------------------------------------------------- skips, summary


@dataclass
class Skips:
    """Utterances or recordings left out, grouped by reason; with ``strict`` the first one is fatal instead."""

    strict: bool = False
    by_reason: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        if self.strict:
            raise ManifestError(f"{where}: {reason} (skipped without --strict)")
        self.by_reason.setdefault(reason, []).append(where)

    def total(self) -> int:
        return sum(len(v) for v in self.by_reason.values())

    def lines(self) -> List[str]:
        out = [f"skipped: {self.total()}"]
        for reason in sorted(self.by_reason):
            items = self.by_reason[reason]
            out.append(f"  {reason}: {len(items)}")
            out += [f"    {item}" for item in items[:SUMMARY_EXAMPLES]]
            if len(items) > SUMMARY_EXAMPLES:
                out.append(f"    ... and {len(items) - SUMMARY_EXAMPLES} more")
        return out


@dataclass
class SubsetStats:
    name: str
    rows: int = 0
    frames: int = 0

    @property
    def hours(self) -> float:
        return self.frames / SAMPLE_RATE / 3600


def summary_lines(title: str, stats: Sequence[SubsetStats], skips: Skips, notes: Sequence[str] = ()) -> List[str]:
    """The final report: rows and hours per subset and in total, skipped items by reason, extra notes."""
    out = [title]
    width = max([len(s.name) for s in stats] + [5])
    for s in stats:
        out.append(f"  {s.name:<{width}}  {s.rows:>7} utterances  {s.hours:8.3f} h")
    out.append(f"  {'total':<{width}}  {sum(s.rows for s in stats):>7} utterances  "
               f"{sum(s.hours for s in stats):8.3f} h")
    out += skips.lines()
    out += list(notes)
    return out
