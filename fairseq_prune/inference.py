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
"""
import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import editdistance
import torch
from fairseq import checkpoint_utils, utils
from fairseq.data.data_utils import post_process
from fairseq.models import MODEL_REGISTRY
from fairseq.models.wav2vec.wav2vec2_asr import Wav2VecCtc
from fairseq.tasks import TASK_REGISTRY
from fairseq.tasks.audio_finetuning import AudioFinetuningTask
from omegaconf import open_dict

from .checkpoints import CheckpointError, atomic_outputs, model_name, read_checkpoint
from .decode_inputs import (
    AudioEntry,
    InferenceError,
    Manifest,
    ReadErrorsReported,
    check_audio,
    check_dictionary,
    check_file,
    check_manifest,
    raise_read_error,
)
from .decoding import greedy_units
from .intent import intent_counts, strip_intent
from .safe_output import OutputError, check_output_folder, sweep_stale

logger = logging.getLogger(__name__)

#: the four files fairseq's infer.py writes, in the order it opens them
RESULT_FILES = ("hypo.word", "hypo.units", "ref.word", "ref.units")
SUMMARY_FILE = "summary.json"
#: values accepted by fairseq's ``post_process``
POST_PROCESS_CHOICES = ("letter", "sentencepiece", "wordpiece", "silence", "_EOW", "subword_nmt", "none")


# ---------------------------------------------------------------------------------------------------------------
# model


@dataclass
class LoadedModel:
    """A CTC model ready for decoding, with the task that reads the manifest."""

    path: str
    model: Any
    task: Any
    cfg: Any
    model_name: str
    labels: str
    default_post_process: str
    device: str


def _check_ctc_checkpoint(path: str, state: Dict[str, Any]) -> None:
    name = model_name(state)
    cls = MODEL_REGISTRY.get(name)
    if cls is None or not issubclass(cls, Wav2VecCtc):
        raise InferenceError(
            f"{path}: holds model {name!r}, not a CTC model that can be decoded (expected wav2vec_ctc, "
            "wav2vec2_ctc_pruning or a subclass of fairseq's Wav2VecCtc)"
        )
    task_name = str(state["cfg"].task.get("_name", None))
    task_cls = TASK_REGISTRY.get(task_name)
    if task_cls is None or not issubclass(task_cls, AudioFinetuningTask):
        raise InferenceError(
            f"{path}: was trained with task {task_name!r}; decoding needs an audio fine-tuning task "
            "(audio_finetuning, audio_pruning or a subclass)"
        )


def read_ctc_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint and check that it holds a CTC model trained with an audio fine-tuning task."""
    if not os.path.isfile(path):
        raise InferenceError(f"{path}: no such checkpoint file (--path)")
    try:
        state = read_checkpoint(path)
    except CheckpointError as e:
        raise InferenceError(str(e)) from e
    _check_ctc_checkpoint(path, state)
    state["args"] = None  # read_checkpoint converted old args-style configs into state["cfg"]: use that
    return state


def checkpoint_labels(state: Dict[str, Any]) -> str:
    """The ``task.labels`` a checkpoint was trained with (``ltr`` when it does not say)."""
    return str(state["cfg"].task.get("labels", None) or "ltr")


def load_model(path: str, state: Dict[str, Any], data: str, labels: str, cpu: bool = False) -> LoadedModel:
    """Build the model of a checkpoint read by :func:`read_ctc_checkpoint` and set up its task on manifest
    folder ``data``.

    The checkpoint's task config is kept except for ``data`` and ``labels`` (replaced) and the fields that only
    shape training batches (``max_sample_size``, ``min_sample_size``, ``num_batch_buckets``: reset to the
    defaults fairseq's ``infer.py`` runs with, so that no utterance is cropped or skipped).
    """
    name = model_name(state)
    cfg = state["cfg"]
    with open_dict(cfg):
        cfg.task.data = os.path.abspath(data)
        cfg.task.labels = labels
        cfg.task.max_sample_size = None
        cfg.task.min_sample_size = None
        cfg.task.num_batch_buckets = 0
    criterion = cfg.get("criterion", None)
    default_post = str(criterion.get("post_process", None) or "letter") if criterion is not None else "letter"
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    except (RuntimeError, KeyError, ValueError) as e:  # mostly: output layer and dictionary sizes differ
        dict_file = os.path.join(data, f"dict.{labels}.txt")
        raise InferenceError(
            f"{path}: the model does not fit {dict_file} (not the dictionary it was trained with?): "
            f"{type(e).__name__}: {e}"
        ) from e
    model = models[0]
    use_cuda = not cpu and torch.cuda.is_available()
    if not cpu and not use_cuda:
        logger.info("CUDA not available: decoding on CPU")
    model.make_generation_fast_()  # eval mode, weight norm removed: what fairseq's infer.py does
    model.eval()
    if use_cuda:
        model.cuda()
    return LoadedModel(path, model, task, cfg, name, labels, default_post, "cuda" if use_cuda else "cpu")


# ---------------------------------------------------------------------------------------------------------------
# decoders


def blank_index(dictionary) -> int:
    """The CTC blank: ``<ctc_blank>`` if the dictionary has it, else ``<s>`` (index 0), as fairseq's decoders."""
    return dictionary.index("<ctc_blank>") if "<ctc_blank>" in dictionary.indices else dictionary.bos()


def silence_index(dictionary) -> int:
    """The word boundary token: ``<sep>``, else ``|``, else ``</s>``, as fairseq's decoders."""
    for symbol in ("<sep>", "|"):
        if symbol in dictionary.indices:
            return dictionary.index(symbol)
    return dictionary.eos()


@dataclass
class Hypothesis:
    """One decoded utterance: unit indices, and the words when the decoder produces words (beam search)."""

    tokens: List[int]
    words: Optional[List[str]] = None


class ViterbiDecoder:
    """Greedy (best path) CTC decoding of each utterance's valid frames."""

    name = "viterbi"

    def __init__(self, dictionary) -> None:
        self.blank = blank_index(dictionary)

    def __call__(self, emissions: torch.Tensor, lengths: torch.Tensor) -> List[Hypothesis]:
        return [Hypothesis(u) for u in greedy_units(emissions, lengths, self.blank)]


@dataclass
class BeamOptions:
    """Options of the lexicon beam search with a KenLM language model (defaults: those of fairseq's infer.py)."""

    kenlm_model: str
    lexicon: str
    beam: int = 5
    beam_threshold: float = 50.0
    beam_size_token: Optional[int] = None
    lm_weight: float = 2.0
    word_score: float = -1.0
    unk_weight: float = -math.inf
    sil_weight: float = 0.0


def import_ctc_decoder() -> Callable:
    """torchaudio's ``ctc_decoder`` factory, or an :class:`InferenceError` saying how to install what it needs."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401  (torchaudio's CTC decoder is built on it)
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as e:
        raise InferenceError(
            "beam-search decoding (--kenlm-model/--lexicon) needs the flashlight-text package, which is not "
            "installed: pip install 'fairseq-prune[lm]' (or pip install flashlight-text)"
        ) from e
    return ctc_decoder


def check_lexicon(path: str, dictionary) -> None:
    """Every spelling token of the lexicon must be a unit of the model's dictionary (flashlight would otherwise
    fail without naming the word)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise InferenceError(f"{path}:{lineno}: lexicon line needs a word and its spelling: {line.strip()!r}")
            for token in parts[1:]:
                if token not in dictionary.indices:
                    raise InferenceError(
                        f"{path}:{lineno}: spelling of {parts[0]!r} uses {token!r}, which is not in the model's "
                        "dictionary"
                    )


class KenLMBeamDecoder:
    """Lexicon-constrained CTC beam search with a KenLM (binary or ARPA) word LM: torchaudio's ``ctc_decoder``.

    Emissions are log-softmax normalised. (fairseq's KenLM decoder feeds raw logits; the two differ per frame by
    a constant shared by all hypotheses, so the search is the same.) Like fairseq's, the search runs over all
    frames of the padded batch when the blank is index 0: ``get_logits`` has set the padded frames to index 0, so
    they cannot change the words, and the unit strings (which can end in one more ``|``) match fairseq's. With
    another blank index the search stops at each utterance's last valid frame.
    """

    name = "kenlm"

    def __init__(self, dictionary, options: BeamOptions) -> None:
        ctc_decoder = import_ctc_decoder()
        check_file(options.kenlm_model, "--kenlm-model")
        check_file(options.lexicon, "--lexicon")
        check_lexicon(options.lexicon, dictionary)
        tokens = [dictionary[i] for i in range(len(dictionary))]
        self.all_frames = blank_index(dictionary) == 0
        try:
            self.decoder = ctc_decoder(
                lexicon=options.lexicon,
                tokens=tokens,
                lm=options.kenlm_model,
                nbest=1,
                beam_size=options.beam,
                beam_size_token=options.beam_size_token,
                beam_threshold=options.beam_threshold,
                lm_weight=options.lm_weight,
                word_score=options.word_score,
                unk_score=options.unk_weight,
                sil_score=options.sil_weight,
                blank_token=tokens[blank_index(dictionary)],
                sil_token=tokens[silence_index(dictionary)],
                unk_word=dictionary.unk_word,
            )
        except Exception as e:  # flashlight/KenLM report unreadable files as plain RuntimeErrors
            raise InferenceError(
                f"cannot build the beam-search decoder from {options.kenlm_model} and {options.lexicon} "
                f"({type(e).__name__}: {e})"
            ) from e

    def __call__(self, emissions: torch.Tensor, lengths: torch.Tensor) -> List[Hypothesis]:
        lprobs = torch.log_softmax(emissions.float(), dim=-1).cpu().contiguous()
        results = self.decoder(lprobs, None if self.all_frames else lengths.cpu().to(torch.int32))
        out = []
        for nbest in results:
            if not nbest:
                out.append(Hypothesis([], []))
                continue
            out.append(Hypothesis(nbest[0].tokens.tolist(), list(nbest[0].words)))
        return out


# ---------------------------------------------------------------------------------------------------------------
# data


def batch_iterator(
    task,
    subset: str,
    max_tokens: Optional[int],
    batch_size: Optional[int],
    seed: int = 1,
    num_workers: int = 1,
) -> Any:
    """The task's batch iterator over ``subset`` with the arguments fairseq's ``infer.py`` passes (and
    ``required_batch_size_multiple=1``: larger values make fairseq drop the last, partial batch)."""
    return task.get_batch_iterator(
        dataset=task.dataset(subset),
        max_tokens=max_tokens,
        max_sentences=batch_size,
        max_positions=(sys.maxsize, sys.maxsize),
        ignore_invalid_inputs=False,
        required_batch_size_multiple=1,
        seed=seed,
        num_shards=1,
        shard_id=0,
        num_workers=num_workers,
        data_buffer_size=10,
    ).next_epoch_itr(shuffle=False)


def audio_samples(net_input: Dict[str, torch.Tensor]) -> int:
    """Number of (non-padding) audio samples in a batch."""
    source = net_input["source"]
    padding = net_input.get("padding_mask", None)
    if padding is None:
        return int(source.shape[0] * source.shape[-1])
    return int((~padding).sum())


@torch.no_grad()
def emissions(model, net_input: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, V)`` CTC scores on CPU (``get_logits``, as fairseq's decoders) and ``(B,)`` valid frames."""
    encoder_input = {k: v for k, v in net_input.items() if k != "prev_output_tokens"}
    net_output = model(**encoder_input)
    logits = model.get_logits(net_output)  # T x B x V, padded frames set to the blank
    logits = logits.transpose(0, 1).float().cpu().contiguous()
    padding = net_output.get("padding_mask", None)
    if padding is not None:
        lengths = (~padding).long().sum(-1).cpu()
    else:
        lengths = torch.full((logits.size(0),), logits.size(1), dtype=torch.long)
    return logits, lengths


# ---------------------------------------------------------------------------------------------------------------
# results


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


class ResultWriter:
    """Writes the four result files (and ``summary.json``) to temporary files in the results folder
    (:func:`~fairseq_prune.checkpoints.atomic_outputs`) that are renamed only in :meth:`commit`, so a failed or
    interrupted run leaves no partial files behind."""

    def __init__(self, folder: Optional[str]) -> None:
        self.folder = folder
        self._files: Dict[str, Any] = {}
        self._outputs = contextlib.ExitStack()
        if folder is None:
            return
        names = RESULT_FILES + (SUMMARY_FILE,)
        tmps = self._outputs.enter_context(atomic_outputs([os.path.join(folder, name) for name in names]))
        self._tmp = dict(zip(names, tmps))
        for name in RESULT_FILES:
            self._files[name] = open(self._tmp[name], "w", encoding="utf-8")

    def write(self, utt: Utterance) -> None:
        if self.folder is None:
            return
        self._files["hypo.word"].write(result_line(utt.hyp_words, utt.id))
        self._files["hypo.units"].write(result_line(utt.hyp_units, utt.id))
        self._files["ref.word"].write(result_line(utt.ref_words, utt.id))
        self._files["ref.units"].write(result_line(utt.ref_units, utt.id))

    def commit(self, summary: Dict[str, Any]) -> None:
        if self.folder is None:
            return
        with open(self._tmp[SUMMARY_FILE], "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        for f in self._files.values():
            f.close()
        self._outputs.close()  # renames them all

    def discard(self) -> None:
        for f in self._files.values():
            f.close()
        abandoned = RuntimeError("decoding did not finish")
        self._outputs.__exit__(type(abandoned), abandoned, None)  # removes the temporary files


# ---------------------------------------------------------------------------------------------------------------
# the decoding loop


@dataclass
class InferenceConfig:
    """Everything ``fairseq-prune-infer`` needs (see its ``--help``)."""

    data: str
    path: str
    gen_subset: str = "test"
    labels: Optional[str] = None
    results_path: Optional[str] = None
    max_tokens: Optional[int] = 3000000
    batch_size: Optional[int] = None
    cpu: bool = False
    post_process: Optional[str] = None
    seed: int = 1
    num_workers: int = 1
    beam: Optional[BeamOptions] = None
    quiet: bool = False
    progress: bool = True
    #: ``pytorch``, or ``onnxruntime`` for a model written by fairseq-prune-onnx (``path`` is then the .onnx file)
    backend: str = "pytorch"


def check_options(cfg: InferenceConfig) -> None:
    """What can be checked before anything is loaded: batching, the results folder (temporary files that killed
    runs left in it are removed), the LM files and the beam-search package."""
    if cfg.max_tokens is None and cfg.batch_size is None:
        raise InferenceError("give --max-tokens or --batch-size")
    if cfg.results_path is not None:
        try:
            check_output_folder(cfg.results_path, "--results-path")
        except OutputError as e:
            raise InferenceError(str(e)) from e
        sweep_stale(cfg.results_path)
    if cfg.beam is not None:
        check_file(cfg.beam.kenlm_model, "--kenlm-model")
        check_file(cfg.beam.lexicon, "--lexicon")
        import_ctc_decoder()


def load_inputs(cfg: InferenceConfig) -> Tuple[Manifest, List[AudioEntry], LoadedModel]:
    """Check the checkpoint, the manifest, its dictionary and its audio files, then load the model and the
    subset (whose failed audio reads are reported with their manifest line)."""
    if cfg.backend == "onnxruntime":  # the same checks, onnxruntime in place of the model
        from .onnx_runtime import read_onnx_model

        manifest, entries, loaded = read_onnx_model(cfg)
    else:
        state = read_ctc_checkpoint(cfg.path)
        labels = cfg.labels or checkpoint_labels(state)
        manifest = check_manifest(cfg.data, cfg.gen_subset, labels)
        check_dictionary(cfg.path, state, manifest.dict_file)
        entries = check_audio(manifest.tsv, int(state["cfg"].task.get("sample_rate", 16000)))
        loaded = load_model(cfg.path, state, cfg.data, labels, cfg.cpu)
    task = loaded.task
    try:
        task.load_dataset(cfg.gen_subset, task_cfg=loaded.cfg.task)
    except (AssertionError, OSError) as e:
        raise InferenceError(f"{manifest.tsv}: cannot load subset {cfg.gen_subset!r} ({type(e).__name__}: {e})") from e
    task.datasets[cfg.gen_subset] = ReadErrorsReported(task.datasets[cfg.gen_subset])
    return manifest, entries, loaded


def decode_batches(cfg: InferenceConfig, loaded: LoadedModel, decoder, post: str, manifest: Manifest,
                   entries: List[AudioEntry], writer: "ResultWriter", log: Callable[[str], None]) -> Tuple[Scores, int]:
    """Decode every batch of the subset; returns the scores and the number of audio samples decoded."""
    from tqdm import tqdm

    task, model, dictionary = loaded.task, loaded.model, loaded.task.target_dictionary
    itr = batch_iterator(task, cfg.gen_subset, cfg.max_tokens, cfg.batch_size, cfg.seed, cfg.num_workers)
    scores, samples = Scores(), 0
    with tqdm(total=len(task.dataset(cfg.gen_subset)), unit="utt", disable=not cfg.progress or cfg.quiet,
              file=sys.stderr, desc=f"decoding {cfg.gen_subset}") as bar:
        for sample in itr:
            raise_read_error(sample, entries, manifest.tsv)
            if "net_input" not in sample:
                continue
            if loaded.device == "cuda":
                sample = utils.move_to_cuda(sample)
            samples += audio_samples(sample["net_input"])
            logits, lengths = emissions(model, sample["net_input"])
            hypos = decoder(logits, lengths)
            targets = sample["target_label"] if "target_label" in sample else sample["target"]
            for b, sid in enumerate(sample["id"].tolist()):
                utt = make_utterance(dictionary, sid, hypos[b], targets[b], post)
                writer.write(utt)
                scores.add(utt.hyp_words.split(), utt.ref_words.split())
                if not cfg.quiet:
                    log(f"HYPO: {utt.hyp_words}")
                    log(f"REF: {utt.ref_words}")
            bar.update(len(hypos))
    return scores, samples


def run_inference(cfg: InferenceConfig, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Decode ``cfg.gen_subset`` of manifest folder ``cfg.data`` with checkpoint ``cfg.path``; write the result
    files and ``summary.json`` when ``cfg.results_path`` is set. Returns the summary (see :func:`summary_dict`).
    ``log`` receives per-utterance HYPO/REF lines unless ``cfg.quiet``."""
    check_options(cfg)  # fail before loading anything
    t0 = time.perf_counter()
    manifest, entries, loaded = load_inputs(cfg)
    post = cfg.post_process or loaded.default_post_process
    dictionary = loaded.task.target_dictionary
    decoder = KenLMBeamDecoder(dictionary, cfg.beam) if cfg.beam is not None else ViterbiDecoder(dictionary)
    load_seconds = time.perf_counter() - t0
    sample_rate = int(loaded.task.cfg.get("sample_rate", 16000))

    writer = ResultWriter(cfg.results_path)
    t1 = time.perf_counter()
    try:
        scores, samples = decode_batches(cfg, loaded, decoder, post, manifest, entries, writer, log)
        wall = time.perf_counter() - t1
        if scores.utterances != manifest.num_utterances:
            raise InferenceError(
                f"{manifest.tsv}: decoded {scores.utterances} of {manifest.num_utterances} utterances "
                "(audio files skipped by the dataset?)"
            )
        summary = summary_dict(cfg, loaded, decoder.name, post, scores, samples / sample_rate, wall, load_seconds)
        writer.commit(summary)
    except BaseException:
        writer.discard()
        raise
    return summary


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
