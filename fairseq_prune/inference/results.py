"""The result files of decoding: fairseq infer.py's ``hypo.word``, ``hypo.units``, ``ref.word`` and ``ref.units``
(one line per utterance in batch order, the text followed by `` (None-<id>)``), and ``summary.json``.

They are written through :func:`~fairseq_prune.io.checkpoints.atomic_outputs`, the project's one way to write outputs
atomically: all appear together when decoding has finished, none (and no temporary file) when it fails.
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

    def __init__(self, files: Dict[str, IO[str]], summary_path: Optional[str]) -> None:
        self._files = files
        self._summary_path = summary_path

    def write(self, utt: Utterance) -> None:
        """One line per result file."""
        if not self._files:
            return
        self._files["hypo.word"].write(result_line(utt.hyp_words, utt.id))
        self._files["hypo.units"].write(result_line(utt.hyp_units, utt.id))
        self._files["ref.word"].write(result_line(utt.ref_words, utt.id))
        self._files["ref.units"].write(result_line(utt.ref_units, utt.id))

    def write_summary(self, summary: Dict[str, Any]) -> None:
        """``summary.json``: the last file written, once decoding has finished."""
        if self._summary_path is None:
            return
        with open(self._summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


@contextlib.contextmanager
def result_writer(folder: Optional[str]) -> Iterator[ResultWriter]:
    """A :class:`ResultWriter` into temporary files in ``folder`` (created if needed) that become the result files
    and ``summary.json`` when the block succeeds, and are removed when it fails; ``None``: writes nothing."""
    if folder is None:
        yield ResultWriter({}, None)
        return
    names = RESULT_FILES + (SUMMARY_FILE,)
    with atomic_outputs([os.path.join(folder, name) for name in names]) as tmps:
        tmp = dict(zip(names, tmps))
        with contextlib.ExitStack() as stack:  # closed before atomic_outputs renames them
            files = {name: stack.enter_context(open(tmp[name], "w", encoding="utf-8")) for name in RESULT_FILES}
            yield ResultWriter(files, tmp[SUMMARY_FILE])
