"""The result files of decoding: fairseq infer.py's ``hypo.word``, ``hypo.units``, ``ref.word`` and ``ref.units``
(one line per utterance in batch order, the text followed by `` (None-<id>)``), and ``summary.json``.

They are written through :func:`~fairseq_prune.io.checkpoints.atomic_outputs`, the project's one way to write outputs
atomically: all appear together when decoding has finished, none (and no temporary file) when it fails. The output
rule of :mod:`~fairseq_prune.io.safe_output` holds for each file: one that is a FIFO, a device or a socket is refused
before any work (:func:`check_result_files`), a symlink is written through, a second run writing the same folder
refuses, and a failed write (a full disk, ``ulimit -f``) is one line naming the file.
"""
import contextlib
import json
import os
from dataclasses import dataclass
from typing import IO, Any, Dict, Iterator, Optional

import torch
from fairseq import utils
from fairseq.data.data_utils import post_process

from ..io.checkpoints import atomic_outputs
from ..io.safe_output import check_output, write_error, writing
from .decoding import Hypothesis

#: the four files fairseq's infer.py writes, in the order it opens them
RESULT_FILES = ("hypo.word", "hypo.units", "ref.word", "ref.units")
SUMMARY_FILE = "summary.json"


@dataclass
class Utterance:
    """One decoded utterance as fairseq's infer.py writes it."""

    id: int
    hyp_units: str
    hyp_words: str
    ref_units: str
    ref_words: str


def make_utterance(dictionary, sid: int, hypo: Hypothesis, target: torch.Tensor, post: str) -> Utterance:
    """Unit and word strings of a hypothesis and its reference, computed as fairseq's infer.py does."""
    hyp_units = dictionary.string(torch.LongTensor(hypo.tokens))
    hyp_words = " ".join(hypo.words) if hypo.words is not None else post_process(hyp_units, post)
    ref_units = dictionary.string(utils.strip_pad(target, dictionary.pad()).int().cpu())
    return Utterance(sid, hyp_units, hyp_words, ref_units, post_process(ref_units, post))


def result_line(text: str, sid: int) -> str:
    """A line of fairseq's result files (no speaker is known, hence ``None``)."""
    return f"{text} (None-{sid})\n"


class ResultWriter:
    """Writes utterances to the open result files (none when there is no results folder) and the summary to its
    path; made by :func:`result_writer`."""

    def __init__(self, files: Dict[str, IO[str]], summary_path: Optional[str],
                 outputs: Optional[Dict[str, str]] = None) -> None:
        self._files = files
        self._summary_path = summary_path
        self._outputs = outputs or {}  # file name -> the result file it becomes (named when a write fails)

    def _write(self, name: str, text: str) -> None:
        with writing(self._outputs.get(name, name)):
            self._files[name].write(text)

    def write(self, utt: Utterance) -> None:
        """One line per result file."""
        if not self._files:
            return
        self._write("hypo.word", result_line(utt.hyp_words, utt.id))
        self._write("hypo.units", result_line(utt.hyp_units, utt.id))
        self._write("ref.word", result_line(utt.ref_words, utt.id))
        self._write("ref.units", result_line(utt.ref_units, utt.id))

    def write_summary(self, summary: Dict[str, Any]) -> None:
        """``summary.json``: the last file written, once decoding has finished."""
        if self._summary_path is None:
            return
        output = self._outputs.get(SUMMARY_FILE, self._summary_path)
        with writing(output, self._summary_path), open(self._summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


def check_result_files(folder: str) -> None:
    """Refuse, before any work, result files in ``folder`` that must never be replaced (a FIFO, a device, a
    socket, a link to one); existing regular files are replaced, as fairseq's infer.py does."""
    for name in RESULT_FILES + (SUMMARY_FILE,):
        check_output(os.path.join(folder, name), "--results-path", force=True)


def _close(f: IO[str], output: str) -> None:
    with writing(output):  # the last buffered lines are written here
        f.close()


@contextlib.contextmanager
def result_writer(folder: Optional[str]) -> Iterator[ResultWriter]:
    """A :class:`ResultWriter` into temporary files in ``folder`` (created if needed) that become the result files
    and ``summary.json`` when the block succeeds, and are removed when it fails; ``None``: writes nothing."""
    if folder is None:
        yield ResultWriter({}, None)
        return
    names = RESULT_FILES + (SUMMARY_FILE,)
    outputs = {name: os.path.join(folder, name) for name in names}
    in_block = False  # an error raised in the caller's block is the caller's; one of the commit's is ours
    try:
        with atomic_outputs(list(outputs.values())) as tmps:
            tmp = dict(zip(names, tmps))
            with contextlib.ExitStack() as stack:  # closed before atomic_outputs commits them
                files = {name: open(tmp[name], "w", encoding="utf-8") for name in RESULT_FILES}
                for name, f in files.items():
                    stack.callback(_close, f, outputs[name])
                in_block = True
                yield ResultWriter(files, tmp[SUMMARY_FILE], outputs)
                in_block = False
    except OSError as e:
        if in_block:
            raise
        raise write_error(folder, e) from e
