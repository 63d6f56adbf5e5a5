"""The numbers ``fairseq-prune-infer`` reports: fairseq's WER, the transcript WER and intent accuracy of
SLURP-style labels (:class:`Scores`), and the summary (``summary.json``, :func:`summary_dict`) with its printed
line (:func:`summary_line`)."""
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import editdistance

from ..text import intent_counts, strip_intent
from .config import InferenceConfig
from .loading import LoadedModel


@dataclass
class Scores:
    """Word error counts (fairseq's WER: intent tokens count as words), transcript-only counts and intents."""

    utterances: int = 0
    word_errors: int = 0
    ref_words: int = 0
    transcript_errors: int = 0
    transcript_ref_words: int = 0
    intent_correct: int = 0
    intent_total: int = 0

    def add(self, hyp: Sequence[str], ref: Sequence[str]) -> None:
        self.utterances += 1
        self.word_errors += editdistance.eval(list(hyp), list(ref))
        self.ref_words += len(ref)
        hyp_t, ref_t = strip_intent(hyp), strip_intent(ref)
        self.transcript_errors += editdistance.eval(list(hyp_t), list(ref_t))
        self.transcript_ref_words += len(ref_t)
        correct, total = intent_counts([(hyp, ref)])
        self.intent_correct += correct
        self.intent_total += total

    @property
    def wer(self) -> Optional[float]:
        return self.word_errors * 100.0 / self.ref_words if self.ref_words else None

    @property
    def transcript_wer(self) -> Optional[float]:
        if not self.intent_total:
            return None
        return self.transcript_errors * 100.0 / self.transcript_ref_words if self.transcript_ref_words else None

    @property
    def intent_accuracy(self) -> Optional[float]:
        return self.intent_correct * 100.0 / self.intent_total if self.intent_total else None


def score_pairs(pairs: Sequence[Tuple[Sequence[str], Sequence[str]]]) -> Scores:
    """:class:`Scores` of (hypothesis words, reference words) pairs."""
    scores = Scores()
    for hyp, ref in pairs:
        scores.add(hyp, ref)
    return scores


def _round(x: Optional[float], digits: int = 6) -> Optional[float]:
    return None if x is None else round(x, digits)


def summary_dict(
    cfg: InferenceConfig,
    loaded: LoadedModel,
    decoder: str,
    post: str,
    scores: Scores,
    audio_seconds: float,
    wall_seconds: float,
    load_seconds: float,
) -> Dict[str, Any]:
    """The numbers ``fairseq-prune-infer`` prints, as written to ``summary.json``.

    ``wer``: fairseq's WER (all words, intent tokens included). ``transcript_wer``: WER after removing a leading
    intent token from hypothesis and reference; ``intent_accuracy``: share of utterances whose hypothesis starts
    with the reference's intent token; both ``None`` when no reference starts with an intent token. ``rtf``:
    ``wall_seconds / audio_seconds``, where ``wall_seconds`` covers the decoding loop (data loading, forward,
    search) but not loading the model (``load_seconds``).
    """
    return {
        "checkpoint": os.path.abspath(loaded.path),
        "model": loaded.model_name,
        "data": os.path.abspath(cfg.data),
        "gen_subset": cfg.gen_subset,
        "labels": loaded.labels,
        "post_process": post,
        "decoder": decoder,
        "backend": cfg.backend,
        "device": loaded.device,
        "lm": None if cfg.beam is None else {
            "kenlm_model": os.path.abspath(cfg.beam.kenlm_model),
            "lexicon": os.path.abspath(cfg.beam.lexicon),
            "beam": cfg.beam.beam,
            "lm_weight": cfg.beam.lm_weight,
            "word_score": cfg.beam.word_score,
        },
        "max_tokens": cfg.max_tokens,
        "batch_size": cfg.batch_size,
        "utterances": scores.utterances,
        "wer": scores.wer,
        "word_errors": scores.word_errors,
        "ref_words": scores.ref_words,
        "transcript_wer": scores.transcript_wer,
        "transcript_word_errors": scores.transcript_errors if scores.intent_total else None,
        "transcript_ref_words": scores.transcript_ref_words if scores.intent_total else None,
        "intent_accuracy": scores.intent_accuracy,
        "intent_correct": scores.intent_correct if scores.intent_total else None,
        "intent_total": scores.intent_total if scores.intent_total else None,
        "audio_seconds": _round(audio_seconds, 3),
        "wall_seconds": _round(wall_seconds, 3),
        "load_seconds": _round(load_seconds, 3),
        "rtf": _round(wall_seconds / audio_seconds if audio_seconds > 0 else None, 5),
    }


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summary_line(summary: Dict[str, Any]) -> str:
    """The last line ``fairseq-prune-infer`` prints."""
    parts = [f"[{summary['gen_subset']}] {summary['utterances']} utterances"]
    if summary.get("skipped_utterances"):
        parts[0] += f" ({summary['skipped_utterances']} skipped: --skip-bad-audio)"
    if summary["intent_total"]:
        parts.append(
            f"WER {_fmt(summary['wer'])} ({summary['word_errors']}/{summary['ref_words']} words, intent token "
            "counted as a word, as fairseq's infer.py)"
        )
        parts.append(
            f"transcript WER {_fmt(summary['transcript_wer'])} ({summary['transcript_word_errors']}/"
            f"{summary['transcript_ref_words']} words, intent token removed)"
        )
        parts.append(
            f"intent accuracy {_fmt(summary['intent_accuracy'])} ({summary['intent_correct']}/{summary['intent_total']})"
        )
    else:
        parts.append(f"WER {_fmt(summary['wer'])} ({summary['word_errors']}/{summary['ref_words']} words)")
    rtf = summary["rtf"]
    parts.append(f"audio {summary['audio_seconds']:.2f} s")
    parts.append(f"wall {summary['wall_seconds']:.2f} s")
    parts.append(f"RTF {rtf:.4f}" if rtf is not None else "RTF n/a")
    return " | ".join(parts)
