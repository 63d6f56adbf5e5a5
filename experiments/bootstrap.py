"""95% intervals for the study's accuracies: a bootstrap over utterances, and a paired bootstrap for the difference
between two models decoded on the same utterances.

Per-utterance counts come from fairseq-prune-infer's result files (``hypo.word`` / ``ref.word``, scored as
:class:`fairseq_prune.inference.scoring.Scores` scores them). A WER is a ratio of sums (word errors / reference
words), so a resample draws utterances with replacement and recomputes the ratio; the interval is the 2.5th and
97.5th percentile of the resampled values (percentile bootstrap, 2,000 resamples, a fixed seed: the same files
give the same interval).
"""
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: per-utterance counts, the columns of :func:`utterance_counts`
COUNTS = ("word_errors", "ref_words", "transcript_errors", "transcript_ref_words", "intent_correct", "intent_total")
#: each metric as (numerator, denominator) columns, in percent
METRICS = {"wer": ("word_errors", "ref_words"), "transcript_wer": ("transcript_errors", "transcript_ref_words"),
           "intent_accuracy": ("intent_correct", "intent_total")}
RESAMPLES = 2000
_LINE = re.compile(r"^(.*) \(None-(\d+)\)$")


def _read(path: str) -> Dict[int, List[str]]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = _LINE.match(line.rstrip("\n"))
            if m is None:
                raise ValueError(f"{path}:{n}: not a result line 'TEXT (None-ID)'")
            out[int(m.group(2))] = m.group(1).split()
    return out


def utterance_counts(results: str) -> Tuple[List[int], np.ndarray]:
    """Utterance ids (sorted) and their counts ``(N, len(COUNTS))`` from a results folder of fairseq-prune-infer."""
    from fairseq_prune.inference.scoring import Scores

    hyp, ref = _read(os.path.join(results, "hypo.word")), _read(os.path.join(results, "ref.word"))
    if hyp.keys() != ref.keys():
        raise ValueError(f"{results}: hypo.word and ref.word list different utterances")
    ids = sorted(ref)
    rows = []
    for i in ids:
        s = Scores()
        s.add(hyp[i], ref[i])
        rows.append([getattr(s, c) for c in COUNTS])
    return ids, np.asarray(rows, dtype=np.int64).reshape(len(ids), len(COUNTS))


def _indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))


def _ratio(counts: np.ndarray, metric: str, idx: Optional[np.ndarray] = None) -> np.ndarray:
    num, den = (COUNTS.index(c) for c in METRICS[metric])
    if idx is None:
        return np.asarray(100.0 * counts[:, num].sum() / max(counts[:, den].sum(), 1))
    return 100.0 * counts[idx, num].sum(-1) / np.maximum(counts[idx, den].sum(-1), 1)


def interval(counts: np.ndarray, metric: str, seed: int = 0) -> Tuple[float, List[float]]:
    """(value, [low, high]) of ``metric`` (a key of :data:`METRICS`, in percent)."""
    values = _ratio(counts, metric, _indices(len(counts), seed))
    return float(_ratio(counts, metric)), [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def paired_interval(a: Tuple[Sequence[int], np.ndarray], b: Tuple[Sequence[int], np.ndarray], metric: str,
                    seed: int = 0) -> Tuple[float, List[float]]:
    """(a - b, [low, high]) for two decodes ``(ids, counts)`` of the same utterances: each resample draws the same
    utterances for both."""
    (ids_a, ca), (ids_b, cb) = a, b
    if list(ids_a) != list(ids_b):
        raise ValueError("a paired interval needs the same utterances in both decodes")
    idx = _indices(len(ca), seed)
    diff = _ratio(ca, metric, idx) - _ratio(cb, metric, idx)
    return (float(_ratio(ca, metric) - _ratio(cb, metric)),
            [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))])
