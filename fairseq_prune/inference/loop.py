"""The decoding loop of ``fairseq-prune-infer``: check the inputs, load the model and the subset, iterate over the
task's batches as fairseq's ``infer.py`` does, decode the emissions, write the result files and score them."""
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from fairseq import utils

from .inputs import (
    BAD_AUDIO,
    AudioEntry,
    InferenceError,
    Manifest,
    ReadErrorsReported,
    bad_audio,
    check_audio,
    check_labels,
    check_manifest,
    check_max_tokens,
    raise_read_error,
)
from .dictionary import check_dictionary
from .decoding import Decoder, KenLMBeamDecoder, ViterbiDecoder
from .config import InferenceConfig, check_options
from .loading import LoadedModel, checkpoint_labels, load_model, read_ctc_checkpoint
from .results import ResultWriter, Utterance, make_utterance, result_writer
from .scoring import Scores, summary_dict


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


#: a backend reads the model for decoding after the inputs' checks: ``(manifest, audio entries, loaded model)``,
#: the model called like fairseq's (``model(**net_input)``, ``get_logits``). This module has the PyTorch one
#: (:func:`read_pytorch_model`); :func:`fairseq_prune.onnx.runtime.read_onnx_model` is onnxruntime's. The command
#: chooses one before the loop.
Backend = Callable[[InferenceConfig], Tuple[Manifest, List[AudioEntry], LoadedModel]]


def read_pytorch_model(cfg: InferenceConfig) -> Tuple[Manifest, List[AudioEntry], LoadedModel]:
    """Check the checkpoint, the manifest, its dictionary and its audio files, then load the fairseq model."""
    state = read_ctc_checkpoint(cfg.path)
    labels = cfg.labels or checkpoint_labels(state)
    manifest = check_manifest(cfg.data, cfg.gen_subset, labels)
    check_dictionary(cfg.path, state, manifest.dict_file)
    entries = check_audio(manifest.tsv, int(state["cfg"].task.get("sample_rate", 16000)))
    return manifest, entries, load_model(cfg.path, state, cfg.data, labels, cfg.cpu)


def load_inputs(cfg: InferenceConfig, backend: Backend) -> Tuple[Manifest, List[AudioEntry], LoadedModel]:
    """The backend's checks and model, the checks both backends share (batch limit, labels), then the subset,
    read through :class:`ReadErrorsReported` (failed reads and undecodable audio are reported with their manifest
    line)."""
    manifest, entries, loaded = backend(cfg)
    check_max_tokens(cfg.max_tokens, entries, manifest.tsv)
    task = loaded.task
    check_labels(manifest.label_file, task.target_dictionary, cfg.strict_labels)
    try:
        task.load_dataset(cfg.gen_subset, task_cfg=loaded.cfg.task)
    except (AssertionError, OSError) as e:
        raise InferenceError(f"{manifest.tsv}: cannot load subset {cfg.gen_subset!r} ({type(e).__name__}: {e})") from e
    task.datasets[cfg.gen_subset] = ReadErrorsReported(task.datasets[cfg.gen_subset], loaded.receptive_field)
    return manifest, entries, loaded


def decode_sample(loaded: LoadedModel, decoder: Decoder, post: str, sample: Dict[str, Any]) -> List[Utterance]:
    """The utterances of one batch: emissions, hypotheses, and their unit and word strings with the references'."""
    if loaded.device == "cuda":
        sample = utils.move_to_cuda(sample)
    logits, lengths = emissions(loaded.model, sample["net_input"])
    hypos = decoder(logits, lengths)
    targets = sample["target_label"] if "target_label" in sample else sample["target"]
    dictionary = loaded.task.target_dictionary
    return [make_utterance(dictionary, sid, hypos[b], targets[b], post) for b, sid in enumerate(sample["id"].tolist())]


def decode_batches(cfg: InferenceConfig, loaded: LoadedModel, decoder: Decoder, post: str, manifest: Manifest,
                   entries: List[AudioEntry], writer: ResultWriter,
                   log: Callable[[str], None]) -> Tuple[Scores, int, List[str]]:
    """Decode every batch of the subset, writing each utterance; returns the scores, the number of audio samples
    decoded and the utterances skipped (``--skip-bad-audio``; otherwise the first that cannot be decoded stops
    the run)."""
    from tqdm import tqdm

    task = loaded.task
    itr = batch_iterator(task, cfg.gen_subset, cfg.max_tokens, cfg.batch_size, cfg.seed, cfg.num_workers)
    scores, samples, skipped = Scores(), 0, []
    with tqdm(total=len(task.dataset(cfg.gen_subset)), unit="utt", disable=not cfg.progress or cfg.quiet,
              file=sys.stderr, desc=f"decoding {cfg.gen_subset}") as bar:
        for sample in itr:
            raise_read_error(sample, entries, manifest.tsv)
            skipped += bad_audio(sample, entries, manifest.tsv, cfg.skip_bad_audio)
            bar.update(len(sample.get(BAD_AUDIO, [])))
            if "net_input" not in sample:
                continue
            samples += audio_samples(sample["net_input"])
            utterances = decode_sample(loaded, decoder, post, sample)
            for utt in utterances:
                writer.write(utt)
                scores.add(utt.hyp_words.split(), utt.ref_words.split())
                if not cfg.quiet:
                    log(f"HYPO: {utt.hyp_words}")
                    log(f"REF: {utt.ref_words}")
            bar.update(len(utterances))
    return scores, samples, skipped


def check_all_decoded(scores: Scores, manifest: Manifest, skipped: List[str]) -> None:
    """Every utterance of the manifest was decoded or skipped on purpose (none was left out by the dataset)."""
    if scores.utterances + len(skipped) != manifest.num_utterances:
        raise InferenceError(
            f"{manifest.tsv}: decoded {scores.utterances} of {manifest.num_utterances} utterances "
            "(audio files skipped by the dataset?)"
        )


def run_inference(cfg: InferenceConfig, log: Callable[[str], None] = lambda s: None,
                  backend: Backend = read_pytorch_model) -> Dict[str, Any]:
    """Decode ``cfg.gen_subset`` of manifest folder ``cfg.data`` with checkpoint ``cfg.path``; write the result
    files and ``summary.json`` when ``cfg.results_path`` is set (all together, once decoding has finished; none
    when it fails). Returns the summary (see :func:`~.scoring.summary_dict`). ``log`` receives per-utterance
    HYPO/REF lines unless ``cfg.quiet``; ``backend`` reads the model (``cfg.backend`` names it in the summary)."""
    check_options(cfg)  # fail before loading anything
    t0 = time.perf_counter()
    manifest, entries, loaded = load_inputs(cfg, backend)
    post = cfg.post_process or loaded.default_post_process
    dictionary = loaded.task.target_dictionary
    decoder = KenLMBeamDecoder(dictionary, cfg.beam) if cfg.beam is not None else ViterbiDecoder(dictionary)
    load_seconds = time.perf_counter() - t0
    sample_rate = int(loaded.task.cfg.get("sample_rate", 16000))

    with result_writer(cfg.results_path) as writer:
        t1 = time.perf_counter()
        scores, samples, skipped = decode_batches(cfg, loaded, decoder, post, manifest, entries, writer, log)
        wall = time.perf_counter() - t1
        check_all_decoded(scores, manifest, skipped)
        summary = summary_dict(cfg, loaded, decoder.name, post, scores, samples / sample_rate, wall, load_seconds)
        summary.update(skipped_utterances=len(skipped), skipped_audio=skipped)  # --skip-bad-audio
        writer.write_summary(summary)
    return summary
