"""Helpers shared by the corpus scripts: staged (all-or-nothing) output, audio checks and conversion, letter
labels, fairseq dictionaries, skip bookkeeping, progress bars and summaries."""
import argparse
import contextlib
import fcntl
import os
import re
import signal
import shutil
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import soundfile as sf
from tqdm import tqdm

#: the sample rate every manifest row must have
SAMPLE_RATE = 16000
#: characters allowed in transcript words (the project's letter set)
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
#: word boundary symbol of ``.ltr`` labels
WORD_BOUNDARY = "|"
#: how an intent token is spelled; the same pattern as ``fairseq_prune.intent.INTENT_RE`` (a test checks this;
#: importing that module here would import fairseq, which takes seconds)
INTENT_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
#: how many examples of each skip reason a summary lists
SUMMARY_EXAMPLES = 5


class ManifestError(Exception):
    """Bad input that stops a script: the message names the file (and line or field) and what is wrong."""


class Terminated(BaseException):
    """SIGTERM arrived: raised where the script is (a ``BaseException``, so that no ``except Exception`` takes it
    for bad input), so that :class:`Staging` removes what it wrote."""


# ----------------------------------------------------------------------------------------------- CLI plumbing


def run_or_exit(body: Callable[[], None]) -> None:
    """Run a script's body; a :class:`ManifestError` becomes one ``error: ...`` line on stderr and exit code 1.
    SIGTERM and Ctrl-C stop it the same way (exit codes 143 and 130) after the partial output is removed."""
    try:
        with _terminate_by_exception():
            body()
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (Terminated, KeyboardInterrupt) as e:
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        print(f"error: stopped by {signum.name}; output not yet complete was removed", file=sys.stderr)
        sys.exit(128 + signum)


@contextlib.contextmanager
def _terminate_by_exception():
    """While the block runs, SIGTERM raises :class:`Terminated` in this process. Processes forked meanwhile (synthesis
    workers) inherit the handler: there SIGTERM keeps its default action, so ``Pool.terminate()`` ends them quietly."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def progress(items: Sequence, desc: str, unit: str = "file", total: Optional[int] = None):
    """A tqdm progress bar on stderr; disabled when stderr is not a terminal, so logs stay readable."""
    return tqdm(items, desc=desc, unit=unit, total=total, disable=None, file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------- staged output


#: temporary folders of :class:`Staging`: this prefix, 8 characters of ``tempfile``'s alphabet, and inside
#: :data:`STAGING_LOCK`, locked (``flock``) by the process writing there for as long as it runs
PARTIAL_RE = re.compile(r"^\.partial-[a-z0-9_]{8}$")
STAGING_LOCK = ".staging-lock"
#: lock file descriptors of this process's live :class:`Staging` folders
_HELD_LOCKS: Set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child (synthesis workers): close the copies of the staging locks, so that the lock ends with
    the process that took it even when workers outlive it (``kill -9`` of the parent leaves them orphaned)."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def check_dest(dest: str, overwrite: bool, replaces: str) -> None:
    """Refuse an output folder that exists and is not empty unless ``overwrite`` (``--overwrite``);
    ``replaces`` says what ``--overwrite`` replaces. Stale staging folders (:func:`sweep_stale_partials`) are
    removed first: they do not make a folder non-empty."""
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ManifestError(f"{dest}: exists and is not a folder")
    if os.path.isdir(dest):
        sweep_stale_partials(dest)
        if os.listdir(dest) and not overwrite:
            raise ManifestError(f"{dest}: folder exists and is not empty (pass --overwrite to replace {replaces})")


def add_dest_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dest`` and ``--overwrite`` of the manifest scripts (:func:`check_manifest_dest` checks them)."""
    parser.add_argument("--dest", required=True,
                        help="output folder (created if missing; must be empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a --dest that is not empty, replacing its files of the same names "
                             "(a dict.ltr.txt copied there too)")


def check_manifest_dest(args: argparse.Namespace) -> None:
    check_dest(args.dest, args.overwrite, replaces="its files of the same names")


def sweep_stale_partials(folder: str) -> List[str]:
    """Remove the :class:`Staging` folders in ``folder`` that a killed run left (``kill -9``, power loss): ours by
    name and lock file, stale because no process holds their lock. Anything else, and a staging folder in use, is
    left alone. Returns the names removed (each also reported on stdout)."""
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if PARTIAL_RE.match(name) and not os.path.islink(path) and _lock_is_free(os.path.join(path, STAGING_LOCK)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
            print(f"removed {path}: the partial output of an interrupted run", flush=True)
    return removed


def _lock_is_free(lock: str) -> bool:
    """Whether ``lock`` exists and no process holds its ``flock`` (the one who did was killed)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file (not ours, or a folder being created right now)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held by a running process (or flock unsupported here: keep it)
        return False
    finally:
        os.close(fd)


def _locked_partial_folder(dest: str) -> Tuple[str, int]:
    """A new ``.partial-*`` folder in ``dest`` and the descriptor of its locked lock file. The folder gets its
    ``.partial-XXXXXXXX`` name only once the lock is held, so a sweep never sees it unlocked."""
    new = tempfile.mkdtemp(prefix=".partial-", suffix=".new", dir=dest)
    lock = os.open(os.path.join(new, STAGING_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
    _HELD_LOCKS.add(lock)
    with contextlib.suppress(OSError):  # no flock here: the folder is then never taken for stale
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    tmp = new[: -len(".new")]
    os.rename(new, tmp)
    return tmp, lock


class Staging:
    """All-or-nothing output into ``dest``: files and folders are written under a temporary folder inside
    ``dest`` (``.partial-*``) and moved to their final names by :meth:`commit`. :meth:`abort` (called when the
    ``with`` block raises, SIGTERM included: see :func:`run_or_exit`) removes everything written, and ``dest``
    itself when this object created it. The temporary folder holds a lock for as long as this process lives, so
    that a later run can tell one left by a killed run and remove it (:func:`sweep_stale_partials`)."""

    def __init__(self, dest: str) -> None:
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise ManifestError(f"{dest}: the destination exists and is not a folder")
        self.dest = os.path.abspath(dest)
        self._created = []
        parent = self.dest
        while not os.path.exists(parent):
            self._created.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(self.dest, exist_ok=True)
        sweep_stale_partials(self.dest)
        self.tmp, self._lock = _locked_partial_folder(self.dest)
        self._staged: List[Tuple[str, str]] = []

    def final_path(self, name: str) -> str:
        """Where ``name`` (relative to ``dest``) ends up after :meth:`commit`."""
        return os.path.join(self.dest, name)

    def file(self, name: str) -> str:
        """A temporary path to write the file that will become ``dest/name``."""
        staged = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        self._staged.append((staged, self.final_path(name)))
        return staged

    def folder(self, name: str) -> str:
        """A temporary folder that will become ``dest/name`` (replacing an existing one) on commit; asking again for
        the same name returns the same folder."""
        staged = os.path.join(self.tmp, name)
        if not os.path.isdir(staged):
            os.makedirs(staged)
            self._staged.append((staged, self.final_path(name)))
        return staged

    def commit(self) -> None:
        """Move every staged file and folder to its final name (SIGTERM waits until all are moved), then remove
        the temporary folder."""
        with _sigterm_deferred():
            for staged, final in self._staged:
                if os.path.isdir(final) and not os.path.islink(final):
                    shutil.rmtree(final)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(staged, final)
        self._remove_tmp()

    def abort(self) -> None:
        """Remove everything written so far (and the folders this object created)."""
        self._remove_tmp()
        for folder in self._created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break

    def _remove_tmp(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._lock is not None:
            _HELD_LOCKS.discard(self._lock)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def _sigterm_deferred():
    """SIGTERM is held back (delivered when the block ends) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


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
