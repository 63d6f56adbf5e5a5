#!/usr/bin/env python3
"""fairseq manifests for spoken language understanding from a SLURP checkout.

Every recording of an utterance becomes one row, as in ESPnet's SLURP recipe: ``train`` = ``train.jsonl``
(``slurp_real/``) + ``train_synthetic.jsonl`` (``slurp_synth/``, unless ``--no-synthetic``), ``devel``, ``test``.
Labels start with the intent token as SLURP spells it (``alarm_set``), then the upper-case transcript:

* ``{split}.wrd``: ``alarm_set WAKE ME UP AT FIVE AM`` (``--labels intent``: ``alarm_set``)
* ``{split}.ltr``: ``alarm_set | W A K E | M E | ... |`` (``--labels intent``: ``alarm_set |``)
* ``dict.ltr.txt``: letters, ``|`` and intent tokens (training counts; intents seen only outside ``train`` get 0)
* ``intents.json``: the intent inventory with utterance and recording counts per split
* with ``--unit spm --vocab-size N`` also ``{split}.spm``, ``dict.spm.txt``, ``spm.model``/``spm.vocab``
  (a sentencepiece model of the training transcripts with the intents as user-defined symbols; fairseq:
  ``task.labels=spm``, ``criterion.post_process=sentencepiece``)

    python manifests/slurp.py slurp --dest data/slurp
"""
import argparse
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from manifests.common import (
    Staging, add_dest_arguments, check_manifest_dest,
    INTENT_RE, AudioPolicy, ManifestError, Skips, SubsetStats, add_audio_arguments, audio_policy, audio_row,
    count_units, dictionary_lines, letter_units, outside_letter_set, progress, run_or_exit, summary_lines,
    write_lines,
)

SPLITS = ("train", "devel", "test")
#: output split -> (jsonl file, audio folder) sources in order
SOURCES = {
    "train": (("train.jsonl", "slurp_real"), ("train_synthetic.jsonl", "slurp_synth")),
    "devel": (("devel.jsonl", "slurp_real"),),
    "test": (("test.jsonl", "slurp_real"),),
}
SPM_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")


@dataclass
class Row:
    rel: str  # path relative to the tsv root (absolute for converted audio)
    frames: int
    intent: str
    words: List[str]


@dataclass
class SplitOutput:
    stats: SubsetStats
    rows: List[Row] = field(default_factory=list)
    utterances: Counter = field(default_factory=Counter)  # intent -> utterances with at least one row
    scenarios: Dict[str, str] = field(default_factory=dict)  # intent -> scenario


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write fairseq SLU manifests (intent token + transcript) for SLURP.")
    p.add_argument("root", help="SLURP checkout (holding dataset/slurp/*.jsonl)")
    add_dest_arguments(p)
    p.add_argument("--audio-dir", default=None,
                   help="folder holding slurp_real/ and slurp_synth/ (default: ROOT/audio, else ROOT)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to write (default all)")
    p.add_argument("--no-synthetic", action="store_true",
                   help="leave train_synthetic.jsonl (slurp_synth/) out of train (ESPnet includes it)")
    p.add_argument("--labels", choices=("full", "intent"), default="full",
                   help="full: intent token then transcript (default); intent: the intent token only")
    p.add_argument("--unit", choices=("ltr", "spm"), default="ltr",
                   help="ltr: letters only (default); spm: also sentencepiece units (.spm, dict.spm.txt)")
    p.add_argument("--vocab-size", type=int, default=None, help="sentencepiece vocabulary size (with --unit spm)")
    p.add_argument("--spm-type", choices=("unigram", "bpe", "char"), default="unigram",
                   help="sentencepiece model type (default unigram)")
    add_audio_arguments(p)
    p.add_argument("--strict", action="store_true", help="make every skipped recording (see README) an error")
    return p


# ---------------------------------------------------------------------------------------------- text


def normalise_sentence(sentence: str) -> List[str]:
    """SLURP's sentence as upper-case words: ``@`` -> AT, ``#`` -> HASHTAG, ``&`` -> AND (as ESPnet does for the
    first two), ``,`` and ``.`` deleted, other punctuation and ``- _ /`` split words, typographic apostrophes made
    ``'`` and apostrophe-only tokens dropped. Characters outside the letter set (digits, accents, ...) stay, for
    the caller to report."""
    s = sentence.replace("\u2019", "'").replace("\u2018", "'")
    s = s.replace("@", " at ").replace("#", " hashtag ").replace("&", " and ")
    s = s.replace(",", "").replace(".", "")
    s = re.sub(r"[!?;:\"()\[\]{}\-_/\u2026\u201c\u201d]", " ", s)
    return [w for w in s.upper().split() if w.strip("'")]


# ---------------------------------------------------------------------------------------------- reading jsonl


@dataclass
class Utterance:
    where: str  # file:line
    intent: str
    scenario: str
    sentence: str
    files: List[str]


def parse_line(line: str, where: str) -> Utterance:
    """One SLURP jsonl record; raises :class:`ManifestError` naming ``where`` and the field when malformed."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        at = e.msg if e.msg.endswith(" at") else f"{e.msg} at"  # json's "Unterminated string starting at"
        raise ManifestError(f"{where}: not valid JSON ({at} column {e.colno})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, kind in (("sentence", str), ("intent", str), ("recordings", list)):
        if key not in record:
            raise ManifestError(f"{where}: field {key!r} is missing")
        if not isinstance(record[key], kind):
            raise ManifestError(f"{where}: field {key!r} should be a {kind.__name__}, got {record[key]!r:.60}")
    intent = record["intent"]
    if not INTENT_RE.match(intent):
        raise ManifestError(f"{where}: field 'intent' is {intent!r}, expected scenario_action in lower case "
                            "(e.g. alarm_set)")
    files = []
    for i, rec in enumerate(record["recordings"]):
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str) or not rec["file"].strip():
            raise ManifestError(f"{where}: field 'recordings'[{i}] has no 'file' name")
        files.append(rec["file"])
    scenario = record.get("scenario") if isinstance(record.get("scenario"), str) else intent.split("_", 1)[0]
    return Utterance(where, intent, scenario, record["sentence"], files)


def read_jsonl(path: str) -> List[Utterance]:
    """Every record of a SLURP jsonl file (blank lines ignored)."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: SLURP jsonl file not found")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [parse_line(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]


def find_audio_dir(root: str, requested: Optional[str]) -> str:
    if requested is not None:
        if not os.path.isdir(requested):
            raise ManifestError(f"{requested}: audio folder not found")
        return requested
    audio = os.path.join(root, "audio")
    return audio if os.path.isdir(os.path.join(audio, "slurp_real")) else (audio if os.path.isdir(audio) else root)


# ---------------------------------------------------------------------------------------------- splits


def prepare_split(split: str, sources: List[Tuple[List[Utterance], str]], audio_dir: str, intent_only: bool,
                  policy: AudioPolicy, skips: Skips, seen: Set[str], staging: Staging) -> SplitOutput:
    """Rows of one output split from its (utterances, audio folder) sources; ``seen`` holds the recordings already
    used (a recording listed twice is skipped, as ESPnet does)."""
    out = SplitOutput(SubsetStats(split))
    todo = [(utt, sub, f) for utts, sub in sources for utt in utts for f in utt.files]
    counted: Set[str] = set()
    for utt, sub, fname in progress(todo, desc=split):
        words: List[str] = []
        if not intent_only:
            if "<unk>" in utt.sentence:
                skips.add("transcript with <unk> (an unintelligible word)", f"{utt.where} {fname}")
                continue
            words = normalise_sentence(utt.sentence)
            if not words:
                skips.add("empty transcript", f"{utt.where} {fname}")
                continue
            bad = outside_letter_set(words)
            if bad:
                skips.add("characters outside the letter set A-Z ' after normalising",
                          f"{utt.where} {fname} ({bad!r})")
                continue
        rel = os.path.join(sub, fname)
        path = os.path.join(audio_dir, rel)
        if rel in seen:
            skips.add("recording listed more than once", f"{utt.where} {rel}")
            continue
        if not os.path.isfile(path):
            skips.add("unknown recording file (not in the audio folder)", f"{utt.where} {rel}")
            continue
        seen.add(rel)
        row = audio_row(path, rel, (os.path.join("converted", sub), fname), policy, skips, staging)
        if row is None:
            continue
        rel, frames = row
        out.rows.append(Row(rel, frames, utt.intent, words))
        out.stats.rows += 1
        out.stats.frames += frames
        out.scenarios[utt.intent] = utt.scenario
        if utt.where not in counted:
            counted.add(utt.where)
            out.utterances[utt.intent] += 1
    return out


def wrd_line(row: Row) -> str:
    return " ".join([row.intent] + row.words)


def ltr_line(row: Row) -> str:
    return letter_units(row.words, intent=row.intent)


# ---------------------------------------------------------------------------------------------- sentencepiece


def train_spm(transcripts: List[str], intents: List[str], vocab_size: int, model_type: str, prefix: str):
    """Train a sentencepiece model on ``transcripts`` with the intents as user-defined symbols; returns it loaded."""
    import sentencepiece as spm

    if not transcripts:
        raise ManifestError("--unit spm: the training split has no transcripts to train sentencepiece on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(transcripts), model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, user_defined_symbols=intents, bos_id=-1, eos_id=-1, unk_id=0,
            num_threads=1, minloglevel=2, hard_vocab_limit=True,
        )
    except RuntimeError as e:
        raise ManifestError(f"--vocab-size {vocab_size}: sentencepiece could not train ({str(e).strip()})") from None
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def spm_line(sp, row: Row) -> str:
    """The intent token, then the sentencepiece pieces of the transcript."""
    return " ".join([row.intent] + sp.encode(" ".join(row.words), out_type=str))


# ---------------------------------------------------------------------------------------------- main


def check_args(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.root):
        raise ManifestError(f"{args.root}: SLURP folder not found")
    if args.unit == "spm":
        if args.vocab_size is None or args.vocab_size < 2:
            raise ManifestError("--unit spm needs --vocab-size N (N >= 2)")
        if args.labels == "intent":
            raise ManifestError("--labels intent has one token per utterance: use --unit ltr")
        if "train" not in args.splits:
            raise ManifestError("--unit spm trains sentencepiece on the train split: include it in --splits")
    elif args.vocab_size is not None:
        raise ManifestError("--vocab-size is for --unit spm only")


def run(args: argparse.Namespace) -> List[str]:
    """Read every jsonl first (any malformed line stops before audio is touched), prepare the splits, then write
    all outputs at once; returns the summary lines."""
    check_args(args)
    check_manifest_dest(args)
    jsonl_dir = os.path.join(args.root, "dataset", "slurp")
    audio_dir = os.path.realpath(find_audio_dir(args.root, args.audio_dir))
    splits = [s for s in SPLITS if s in args.splits]
    sources: Dict[str, List[Tuple[List[Utterance], str]]] = {}
    for split in splits:
        sources[split] = [(read_jsonl(os.path.join(jsonl_dir, name)), sub) for name, sub in SOURCES[split]
                          if not (args.no_synthetic and name == "train_synthetic.jsonl")]
    policy = audio_policy(args)
    skips = Skips(strict=args.strict)
    intent_only = args.labels == "intent"
    seen: Set[str] = set()
    with Staging(args.dest) as staging:
        outputs = [prepare_split(s, sources[s], audio_dir, intent_only, policy, skips, seen, staging) for s in splits]
        intents = sorted({i for o in outputs for i in o.scenarios})
        for o in outputs:
            write_lines(staging.file(f"{o.stats.name}.tsv"), [audio_dir] + [f"{r.rel}\t{r.frames}" for r in o.rows])
            write_lines(staging.file(f"{o.stats.name}.wrd"), [wrd_line(r) for r in o.rows])
            write_lines(staging.file(f"{o.stats.name}.ltr"), [ltr_line(r) for r in o.rows])
        dict_from = next((o for o in outputs if o.stats.name == "train"), outputs[0])
        dict_lines = dictionary_lines(count_units(ltr_line(r) for r in dict_from.rows), extra=intents)
        write_lines(staging.file("dict.ltr.txt"), dict_lines)
        notes = [f"dict.ltr.txt: {len(dict_lines)} symbols from {dict_from.stats.name} "
                 f"({len(intents)} intents, labels {args.labels})"]
        unseen = sorted(set(intents) - set(dict_from.scenarios))
        if unseen:
            notes.append(f"intents not in {dict_from.stats.name} (count 0 in the dictionaries): {' '.join(unseen)}")
        if args.unit == "spm":
            notes.append(write_spm(args, staging, outputs, dict_from, intents))
        with open(staging.file("intents.json"), "w", encoding="utf-8") as f:
            json.dump(intent_inventory(outputs, intents, args), f, indent=1)
            f.write("\n")
    return summary_lines(f"SLURP manifests in {os.path.abspath(args.dest)}", [o.stats for o in outputs], skips, notes)


def write_spm(args: argparse.Namespace, staging: Staging, outputs: List[SplitOutput], train: SplitOutput,
              intents: List[str]) -> str:
    """Train sentencepiece, write ``{split}.spm``, ``dict.spm.txt`` and the model; returns a summary note."""
    prefix = os.path.join(staging.tmp, "spm")
    sp = train_spm([" ".join(r.words) for r in train.rows], intents, args.vocab_size, args.spm_type, prefix)
    for ext in ("model", "vocab"):
        os.replace(f"{prefix}.{ext}", staging.file(f"spm.{ext}"))
    lines: Dict[str, List[str]] = {o.stats.name: [spm_line(sp, r) for r in o.rows] for o in outputs}
    for name, label_lines in lines.items():
        write_lines(staging.file(f"{name}.spm"), label_lines)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i)) and sp.id_to_piece(i) not in SPM_SPECIALS]
    dict_lines = dictionary_lines(count_units(lines[train.stats.name]), extra=pieces + intents)
    write_lines(staging.file("dict.spm.txt"), dict_lines)
    return f"dict.spm.txt: {len(dict_lines)} units ({args.spm_type}, --vocab-size {args.vocab_size})"


def intent_inventory(outputs: List[SplitOutput], intents: List[str], args: argparse.Namespace) -> dict:
    """Intents with their scenario and, per split, utterances and recordings (rows) kept."""
    rows: Dict[str, Counter] = {o.stats.name: Counter(r.intent for r in o.rows) for o in outputs}
    scenarios: Dict[str, str] = {}
    for o in outputs:
        scenarios.update(o.scenarios)
    by_scenario: Dict[str, List[str]] = defaultdict(list)
    for intent in intents:
        by_scenario[scenarios[intent]].append(intent)
    return {
        "labels": args.labels,
        "synthetic_in_train": not args.no_synthetic,
        "intents": intents,
        "scenarios": dict(sorted(by_scenario.items())),
        "counts": {
            intent: {o.stats.name: {"utterances": o.utterances[intent], "recordings": rows[o.stats.name][intent]}
                     for o in outputs}
            for intent in intents
        },
        "totals": {o.stats.name: {"utterances": sum(o.utterances.values()), "recordings": o.stats.rows}
                   for o in outputs},
    }


def main(args: argparse.Namespace) -> None:
    run_or_exit(lambda: print("\n".join(run(args))), script=__file__)


if __name__ == "__main__":
    main(get_parser().parse_args())
