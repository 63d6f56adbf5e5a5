"""Checks of what decoding reads, against what the model expects, so that bad input ends in one line naming the
file (and the manifest line) instead of a traceback or a silently wrong result:

* the manifest's files (:func:`check_manifest`): the ``.tsv``, the labels (one line per audio line), the dictionary;
* every audio file a manifest lists, before the model is loaded (:func:`check_audio`): it exists, its header
  reads, its sample rate is the model's and its length is the manifest's (a truncated WAV reads without error,
  only shorter); a multi-channel file whose mix-down (fairseq averages the channels) is far quieter than its
  channels, e.g. channels in opposite phase that cancel out, is named in a warning;
* audio that fails only when it is read for decoding: :class:`ReadErrorsReported`, the dataset wrapper every
  backend reads utterances through, carries a failed read (a truncated FLAC) and audio that cannot be decoded
  (NaN or infinite samples; fewer samples than the model's receptive field, which would be decoded from padding
  in a batch or fail in the convolutions alone) to the main process with the item's index; :func:`bad_audio`
  names the file and its manifest line, refusing it or, under ``--skip-bad-audio``, skipping it with a warning;
* the labels against the dictionary (:func:`check_labels`): a symbol the dictionary lacks becomes ``<unk>``;
* ``--max-tokens`` against the longest utterance (:func:`check_max_tokens`).

The dictionary's checks against the model are :mod:`.dictionary`'s.
"""
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from fairseq.data import BaseWrapperDataset

from ..io.errors import PluginError

logger = logging.getLogger(__name__)

#: a multi-channel file whose mix-down lies this much (dB) below its channels' level is named in a warning
#: (uncorrelated channels: 3 dB; identical ones: 0 dB; channels in exact opposite phase: silence)
MIXDOWN_WARNING_DB = 20.0
_READ_ERROR = "audio_read_error"
#: the batch key under which :class:`ReadErrorsReported` lists ``(index, why)`` of utterances it left out
BAD_AUDIO = "bad_audio"


class InferenceError(PluginError):
    """Bad input to decoding (missing or inconsistent files, wrong kind of checkpoint, missing optional
    package). The message names the file or option at fault."""


@dataclass
class Manifest:
    """The files of one subset of a fairseq manifest folder."""

    data: str
    subset: str
    labels: str
    tsv: str
    label_file: str
    dict_file: str
    num_utterances: int


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def check_manifest(data: str, subset: str, labels: str) -> Manifest:
    """Check that ``{data}/{subset}.tsv``, ``{data}/{subset}.{labels}`` and ``{data}/dict.{labels}.txt`` exist and
    that the label file has one line per audio file of the manifest (fairseq would only assert on it later)."""
    if not os.path.isdir(data):
        raise InferenceError(f"{data}: manifest directory not found")
    tsv = os.path.join(data, f"{subset}.tsv")
    label_file = os.path.join(data, f"{subset}.{labels}")
    dict_file = os.path.join(data, f"dict.{labels}.txt")
    if not os.path.isfile(tsv):
        raise InferenceError(f"{tsv}: manifest of subset {subset!r} not found (--gen-subset {subset})")
    if not os.path.isfile(label_file):
        raise InferenceError(f"{label_file}: label file of subset {subset!r} not found (--labels {labels})")
    if not os.path.isfile(dict_file):
        raise InferenceError(f"{dict_file}: dictionary of the {labels!r} labels not found (--labels {labels})")
    audio_lines = _count_lines(tsv) - 1  # the first line is the audio root directory
    if audio_lines < 1:
        raise InferenceError(f"{tsv}: manifest lists no audio files")
    label_lines = _count_lines(label_file)
    if label_lines != audio_lines:
        raise InferenceError(
            f"{label_file} has {label_lines} lines but {tsv} lists {audio_lines} audio files "
            "(one label line per audio line expected)"
        )
    return Manifest(data, subset, labels, tsv, label_file, dict_file, audio_lines)


def check_file(path: Optional[str], option: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise InferenceError(f"{path}: file not found ({option})")


@dataclass
class AudioEntry:
    """An audio line of a manifest: its line number in the ``.tsv`` (the first line is the root folder), the
    audio path and the number of samples the manifest gives."""

    line: int
    path: str
    size: int


def audio_entries(tsv: str) -> List[AudioEntry]:
    """The audio lines of a fairseq manifest (``root`` first, then ``path<TAB>samples`` per line)."""
    entries = []
    try:
        with open(tsv, encoding="utf-8") as f:
            root = f.readline().strip()
            for lineno, line in enumerate(f, 2):
                items = line.strip().split("\t")
                if len(items) != 2 or not items[1].isdigit():
                    raise InferenceError(f"{tsv}:{lineno}: expected 'audio path<TAB>number of samples', got {line.strip()!r}")
                entries.append(AudioEntry(lineno, os.path.join(root, items[0]), int(items[1])))
    except UnicodeDecodeError as e:
        raise InferenceError(f"{tsv}: not a text manifest ({e})") from e
    return entries


def _error_text(e: Exception) -> str:
    return getattr(e, "error_string", None) or f"{type(e).__name__}: {e}"  # soundfile's errors repeat the path


def _audio_info(entry: AudioEntry, tsv: str, sample_rate: int) -> Optional[Any]:
    """soundfile's header information of an entry (``None`` for audio stored inside a zip file, read only at
    decoding); an :class:`InferenceError` naming the file and its manifest line for a problem."""
    import soundfile as sf
    from fairseq.data.audio.audio_utils import parse_path

    where = f"{tsv}:{entry.line}: {entry.path}"
    try:
        path, slice_ptr = parse_path(entry.path)
    except (FileNotFoundError, AssertionError, ValueError):
        raise InferenceError(f"{where}: audio file not found") from None
    if not os.path.isfile(path):
        raise InferenceError(f"{where}: audio file not found")
    if slice_ptr:
        return None
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises its own error classes (and RuntimeError in older versions)
        raise InferenceError(f"{where}: not readable audio ({_error_text(e)})") from e
    if info.samplerate != sample_rate:
        raise InferenceError(f"{where}: sample rate {info.samplerate} Hz, the model needs {sample_rate} Hz")
    if info.frames != entry.size:
        raise InferenceError(
            f"{where}: holds {info.frames} samples but the manifest says {entry.size} (truncated or replaced file?)"
        )
    return info


def mixdown_loss_db(audio: np.ndarray) -> float:
    """How far (dB) the energy of the channels' mean, what fairseq decodes, lies below the mean energy of the
    channels of ``audio`` (samples x channels)."""
    channels = float(np.mean(np.square(audio, dtype=np.float64)))
    mix = float(np.mean(np.square(audio.mean(axis=1, dtype=np.float64))))
    if channels == 0.0:
        return 0.0  # a silent file loses nothing by mixing
    return math.inf if mix == 0.0 else 10.0 * math.log10(channels / mix)


def check_audio(tsv: str, sample_rate: int) -> List[AudioEntry]:
    """Check every audio file of manifest ``tsv`` (see the module's docstring); returns its entries."""
    import soundfile as sf

    entries = audio_entries(tsv)
    for entry in entries:
        info = _audio_info(entry, tsv, sample_rate)
        if info is None or info.channels < 2:
            continue
        loss = mixdown_loss_db(sf.read(entry.path, dtype="float32", always_2d=True)[0])
        if loss >= MIXDOWN_WARNING_DB:
            level = "silence" if math.isinf(loss) else f"{loss:.0f} dB below their level"
            logger.warning("%s:%d: %s: its %d channels mix down to %s (channels in opposite phase?); the model "
                           "decodes the mix-down", tsv, entry.line, entry.path, info.channels, level)
    return entries


def check_max_tokens(max_tokens: Optional[int], entries: List[AudioEntry], tsv: str) -> None:
    """Every utterance must fit in a batch of ``--max-tokens`` samples (fairseq's batching stops with a
    traceback on the first that does not)."""
    longest = max(entries, key=lambda e: e.size, default=None)
    if max_tokens and longest is not None and longest.size > max_tokens:
        raise InferenceError(f"{tsv}:{longest.line}: {longest.path}: {longest.size} samples do not fit in a batch of "
                             f"--max-tokens {max_tokens}; give --max-tokens {longest.size} or more (0: no limit)")


def check_labels(label_file: str, dictionary: Any, strict: bool = False) -> int:
    """Label symbols that ``dictionary`` (the one the model decodes with) lacks become ``<unk>`` in the
    references (fairseq's label encoder): one warning naming the first one's ``file:line`` and the count, or
    (``strict``, ``--strict-labels``) an :class:`InferenceError`. Returns the count."""
    count, lines, first = 0, 0, None
    try:
        with open(label_file, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                unknown = [s for s in line.split() if s not in dictionary.indices]
                if unknown:
                    count, lines = count + len(unknown), lines + 1
                    first = first or (lineno, unknown[0])
    except UnicodeDecodeError as e:
        raise InferenceError(f"{label_file}: not UTF-8 text ({e})") from e
    if not count:
        return 0
    message = (f"{label_file}:{first[0]}: {first[1]!r} is not in the model's dictionary ({len(dictionary)} "
               f"symbols); {count} label symbol(s) on {lines} line(s) are not, and become <unk> in ref.word")
    if strict:
        raise InferenceError(f"{message} (--strict-labels)")
    logger.warning("%s; scores count them as errors", message)
    return count


def audio_problem(source: Any, min_samples: int) -> Optional[str]:
    """Why an utterance's samples (a 1-D tensor, as the dataset returns them) cannot be decoded, or ``None``."""
    import torch

    if source.numel() < min_samples:
        return (f"{source.numel()} samples, fewer than the {min_samples} the model's convolutions need for one "
                "output frame (its receptive field)")
    if not bool(torch.isfinite(source).all()):
        return f"holds NaN or infinite samples ({int((~torch.isfinite(source)).sum())} of {source.numel()})"
    return None


class ReadErrorsReported(BaseWrapperDataset):
    """An audio dataset whose failed reads and undecodable utterances (:func:`audio_problem`) become part of the
    batch instead of exceptions or silent results: raised in a data-loading worker, an exception would reach the
    main process as a multi-line traceback without the index of the item that failed. A batch keeps the
    utterances that can be decoded; the others are listed under :data:`BAD_AUDIO`."""

    def __init__(self, dataset, min_samples: int = 1) -> None:
        super().__init__(dataset)
        self.min_samples = max(1, int(min_samples))

    def __getitem__(self, index):
        try:
            item = self.dataset[index]
        except Exception as e:  # fairseq's reader raises a bare Exception after its retries
            return {"id": index, "source": None, _READ_ERROR: f"{type(e).__name__}: {e}"}
        problem = audio_problem(item["source"], self.min_samples)
        return item if problem is None else {"id": index, "source": None, BAD_AUDIO: problem}

    def collater(self, samples):
        failed = [(s["id"], s[_READ_ERROR]) for s in samples if _READ_ERROR in s]
        if failed:
            return {_READ_ERROR: failed}
        bad = [(s["id"], s[BAD_AUDIO]) for s in samples if BAD_AUDIO in s]
        batch = self.dataset.collater([s for s in samples if BAD_AUDIO not in s])
        if bad:
            batch[BAD_AUDIO] = bad
        return batch


def bad_audio(batch: Dict[str, Any], entries: List[AudioEntry], tsv: str, skip: bool) -> List[str]:
    """The utterances of ``batch`` that cannot be decoded, as ``tsv:line: path: why``: an :class:`InferenceError`
    for the first, or (``skip``) a warning for each; returns them."""
    lines = []
    for index, problem in batch.get(BAD_AUDIO, []):
        entry = entries[index]
        where = f"{tsv}:{entry.line}: {entry.path}: {problem}"
        if not skip:
            raise InferenceError(f"{where}; not decoded (--skip-bad-audio skips such utterances with a warning)")
        logger.warning("%s; skipped (--skip-bad-audio)", where)
        lines.append(where)
    return lines


def raise_read_error(batch: Dict[str, Any], entries: List[AudioEntry], tsv: str) -> None:
    """An :class:`InferenceError` naming the first audio file of ``batch`` that failed to read, if any."""
    if _READ_ERROR not in batch:
        return
    import soundfile as sf

    index, message = batch[_READ_ERROR][0]
    entry = entries[index]
    try:
        sf.read(entry.path, dtype="float32")  # the reader's own message does not say why
    except Exception as e:
        message = _error_text(e)
    raise InferenceError(f"{tsv}:{entry.line}: {entry.path}: cannot read audio ({message})")
