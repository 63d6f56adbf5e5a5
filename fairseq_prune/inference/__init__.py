"""Decoding a fairseq CTC checkpoint on a manifest subset, the way fairseq's ``speech_recognition/new/infer.py``
does it, plus intent accuracy and timing. The library half of ``fairseq-prune-infer``.

What is shared with fairseq's ``infer.py`` (so that the two give identical results at identical batching):

* the data: the task's own ``load_dataset`` and ``get_batch_iterator`` (same ``max_tokens``, ``batch_size``,
  ``seed``, ``required_batch_size_multiple=1``), iterated in the same order without shuffling;
* the emissions: ``model.get_logits`` of the model's forward output (padded frames forced to the blank), after
  ``make_generation_fast_`` (which removes weight norm, as ``infer.py`` does);
* the text: ``Dictionary.string`` for units and ``post_process`` for words; WER is the word-level edit distance
  summed over utterances divided by the number of reference words;
* the four result files: ``hypo.word``, ``hypo.units``, ``ref.word``, ``ref.units``, one line per utterance in
  batch order, each line the text followed by `` (None-<id>)`` (``<id>`` = the utterance's line in the manifest,
  counting from 0).

Differences, on purpose: the checkpoint's own task (with ``data``/``labels`` replaced) is used instead of one
given on the command line, with the dataset-shaping fields that ``infer.py`` leaves at their defaults reset
(``max_sample_size``, ``min_sample_size``, ``num_batch_buckets``) so no utterance is cropped or skipped; greedy
decoding stops at each utterance's last valid frame; result files appear only when decoding has finished.

The package, one concern a module:

* :mod:`.loading`: the checkpoint (a CTC model, an audio fine-tuning task) built for decoding;
* :mod:`fairseq_prune.inference.decoding`: the decoders (greedy CTC, KenLM beam search);
* :mod:`.scoring`: WER, transcript WER, intent accuracy, the summary;
* :mod:`.results`: the result files, written atomically;
* :mod:`.config` and :mod:`.loop`: what is asked, and the decoding loop (:func:`run_inference`).
"""
from .inputs import InferenceError
from .decoding import BeamOptions
from .config import POST_PROCESS_CHOICES, InferenceConfig
from .loop import run_inference
from .results import RESULT_FILES, SUMMARY_FILE
from .scoring import Scores, score_pairs, summary_line

__all__ = [
    "BeamOptions",
    "InferenceConfig",
    "InferenceError",
    "POST_PROCESS_CHOICES",
    "RESULT_FILES",
    "SUMMARY_FILE",
    "Scores",
    "run_inference",
    "score_pairs",
    "summary_line",
]
