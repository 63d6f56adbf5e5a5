#!/usr/bin/env python3
"""fairseq manifests from a LibriSpeech folder.

For every subset: ``{subset}.tsv`` (first line the subset folder, then ``SPEAKER/CHAPTER/UTT.flac<TAB>frames``),
``{subset}.ltr`` and ``{subset}.wrd``, in the format and row order of fairseq's
``examples/wav2vec/wav2vec_manifest.py --valid-percent 0`` followed by ``libri_labels.py``; plus ``dict.ltr.txt``
(letter counts of one training subset). See ``manifests/README.md`` for the bad-input policy.

    python manifests/librispeech.py LibriSpeech train-clean-100 dev-clean test-clean --dest data/libri
"""
import argparse
import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from manifests.common import (
    Staging, add_dest_arguments, check_manifest_dest,
    AudioPolicy, ManifestError, Skips, SubsetStats, add_audio_arguments, audio_policy, audio_row, count_units,
    dictionary_lines, letter_units, outside_letter_set, progress, run_or_exit, summary_lines, write_lines,
)

AUDIO_EXT = "flac"
TRANS_SUFFIX = ".trans.txt"


@dataclass
class Transcript:
    words: List[str]
    where: str  # "file:line"


@dataclass
class SubsetOutput:
    stats: SubsetStats
    tsv: List[str]
    ltr: List[str]
    wrd: List[str]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write fairseq manifests ({subset}.tsv/.ltr/.wrd and dict.ltr.txt) for LibriSpeech subsets.",
    )
    p.add_argument("root", help="LibriSpeech folder holding the subset folders (e.g. .../LibriSpeech)")
    p.add_argument("subsets", nargs="+", metavar="SUBSET", help="subset folder names, e.g. train-clean-100 dev-clean")
    add_dest_arguments(p)
    p.add_argument("--dict-subset", default=None,
                   help="subset whose letters make dict.ltr.txt (default: the first subset whose name starts "
                        "with 'train', else the first subset)")
    add_audio_arguments(p)
    p.add_argument("--strict", action="store_true",
                   help="make every skipped utterance (see README) an error")
    return p


def choose_dict_subset(subsets: List[str], requested: Optional[str]) -> str:
    """The subset whose labels make ``dict.ltr.txt``."""
    if requested is not None:
        if requested not in subsets:
            raise ManifestError(f"--dict-subset {requested!r} is not one of the subsets given ({' '.join(subsets)})")
        return requested
    return next((s for s in subsets if s.startswith("train")), subsets[0])


def find_audio(subset_dir: str) -> List[str]:
    """The ``.flac`` files under ``subset_dir`` in the order fairseq's ``wav2vec_manifest.py`` lists them
    (a recursive ``glob`` of the real path: file-system order, hidden files left out)."""
    return list(glob.iglob(os.path.join(subset_dir, "**", "*." + AUDIO_EXT), recursive=True))


def read_transcripts(path: str) -> Dict[str, Transcript]:
    """``UTTERANCE-ID word word ...`` lines of a ``.trans.txt`` file (blank lines ignored)."""
    texts: Dict[str, Transcript] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read transcripts ({e.strerror})") from None
    for number, line in enumerate(lines, 1):
        items = line.split()
        if not items:
            continue
        where = f"{path}:{number}"
        if items[0] in texts:
            raise ManifestError(f"{where}: utterance id {items[0]} already appears on {texts[items[0]].where}")
        texts[items[0]] = Transcript(items[1:], where)
    return texts


def chapter_transcript_path(subset_dir: str, rel_dir: str) -> Optional[str]:
    """``SPEAKER-CHAPTER.trans.txt`` of the folder ``rel_dir`` (``SPEAKER/CHAPTER``), or ``None`` when the folder is
    not two levels deep."""
    parts = [p for p in rel_dir.split(os.sep) if p]
    if len(parts) < 2:
        return None
    return os.path.join(subset_dir, rel_dir, f"{parts[-2]}-{parts[-1]}{TRANS_SUFFIX}")


def prepare_subset(root: str, subset: str, policy: AudioPolicy, skips: Skips, staging: Staging) -> SubsetOutput:
    """Rows and labels of one subset (converted audio, if any, staged under ``converted/SUBSET``)."""
    given = os.path.join(root, subset)
    if not os.path.isdir(given):
        raise ManifestError(f"{given}: subset folder not found")
    subset_dir = os.path.realpath(given)
    files = find_audio(subset_dir)
    if not files:
        raise ManifestError(f"{given}: no .{AUDIO_EXT} files in this subset folder")

    transcripts: Dict[str, Optional[Dict[str, Transcript]]] = {}  # rel dir -> texts (None: no transcript file)
    used: Dict[str, Set[str]] = {}  # rel dir -> utterance ids that have audio
    out = SubsetOutput(SubsetStats(subset), [subset_dir], [], [])
    for path in progress(files, desc=subset):
        real = os.path.realpath(path)
        rel = os.path.relpath(real, subset_dir)
        rel_dir = os.path.relpath(os.path.dirname(path), subset_dir)
        utt = os.path.basename(path).split(".")[0]
        if rel_dir not in transcripts:
            trans_path = chapter_transcript_path(subset_dir, rel_dir)
            transcripts[rel_dir] = read_transcripts(trans_path) if trans_path and os.path.isfile(trans_path) else None
        used.setdefault(rel_dir, set()).add(utt)
        texts = transcripts[rel_dir]
        where = path
        if texts is None:
            expected = chapter_transcript_path(subset_dir, rel_dir)
            detail = f"no {os.path.basename(expected)}" if expected else "not in SPEAKER/CHAPTER/"
            skips.add("audio without transcript", f"{where} ({detail})")
            continue
        if utt not in texts:
            skips.add("audio without transcript", f"{where} (no line {utt} in its .trans.txt)")
            continue
        words = texts[utt].words
        if not words:
            skips.add("empty transcript", texts[utt].where)
            continue
        bad = outside_letter_set(words)
        if bad:
            skips.add("characters outside the letter set A-Z '", f"{texts[utt].where} ({bad!r})")
            continue
        row = audio_row(path, rel, (os.path.join("converted", subset), rel), policy, skips, staging)
        if row is None:
            continue
        rel, frames = row
        out.tsv.append(f"{rel}\t{frames}")
        out.wrd.append(" ".join(words))
        out.ltr.append(letter_units(words))
        out.stats.rows += 1
        out.stats.frames += frames

    report_transcripts_without_audio(subset_dir, transcripts, used, skips)
    return out


def report_transcripts_without_audio(
    subset_dir: str, transcripts: Dict[str, Optional[Dict[str, Transcript]]], used: Dict[str, Set[str]], skips: Skips
) -> None:
    """Skip-and-report every ``.trans.txt`` line whose utterance has no audio file (``transcripts`` caches the
    files already read)."""
    for trans in sorted(glob.glob(os.path.join(subset_dir, "**", "*" + TRANS_SUFFIX), recursive=True)):
        rel_dir = os.path.relpath(os.path.dirname(trans), subset_dir)
        texts = transcripts.get(rel_dir)
        if texts is None or chapter_transcript_path(subset_dir, rel_dir) != trans:
            texts = read_transcripts(trans)
        have = used.get(rel_dir, set())
        for utt, text in texts.items():
            if utt not in have:
                skips.add("transcript line without audio", f"{text.where} ({utt})")


def run(args: argparse.Namespace) -> List[str]:
    """Prepare every subset, then write all outputs at once; returns the summary lines."""
    if not os.path.isdir(args.root):
        raise ManifestError(f"{args.root}: LibriSpeech folder not found")
    if len(set(args.subsets)) != len(args.subsets):
        raise ManifestError(f"a subset is given twice: {' '.join(args.subsets)}")
    dict_subset = choose_dict_subset(args.subsets, args.dict_subset)
    check_manifest_dest(args)
    policy = audio_policy(args)
    skips = Skips(strict=args.strict)
    with Staging(args.dest) as staging:
        outputs = [prepare_subset(args.root, s, policy, skips, staging) for s in args.subsets]
        for o in outputs:
            write_lines(staging.file(f"{o.stats.name}.tsv"), o.tsv)
            write_lines(staging.file(f"{o.stats.name}.ltr"), o.ltr)
            write_lines(staging.file(f"{o.stats.name}.wrd"), o.wrd)
        counts = count_units(next(o for o in outputs if o.stats.name == dict_subset).ltr)
        dict_lines = dictionary_lines(counts)
        write_lines(staging.file("dict.ltr.txt"), dict_lines)
    return summary_lines(
        f"LibriSpeech manifests in {os.path.abspath(args.dest)}",
        [o.stats for o in outputs],
        skips,
        [f"dict.ltr.txt: {len(dict_lines)} symbols from {dict_subset}"],
    )


def main(args: argparse.Namespace) -> None:
    run_or_exit(lambda: print("\n".join(run(args))), script=__file__)


if __name__ == "__main__":
    main(get_parser().parse_args())
