"""Running a model written by ``fairseq-prune-onnx`` with onnxruntime.

* :func:`ort_session`: an onnxruntime CPU session with a given number of threads.
* :class:`OnnxCtcModel`: the ONNX model and what its metadata says (dictionary, blank, post-processing, audio
  normalisation); ``emissions`` and ``transcribe`` need nothing but the ``.onnx`` file.
* :func:`load_onnx_for_inference`: the ``--backend onnxruntime`` path of ``fairseq-prune-infer``: the same manifest,
  task, batching, decoders and result files as the PyTorch path, with the forward pass run by onnxruntime.
"""
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..layer_sizes import receptive_field
from .metadata import OnnxMetadata, OnnxModelError, read_metadata

logger = logging.getLogger(__name__)


def import_onnxruntime():
    """The ``onnxruntime`` module, or :class:`OnnxModelError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxModelError(
            "ONNX export and --backend onnxruntime need the onnx and onnxruntime packages, which are not installed: "
            "pip install 'fairseq-prune[onnx]'"
        ) from e
    return onnxruntime


def graph_conv_layers(path: str) -> List[Tuple[int, int, int]]:
    """``(0, kernel, stride)`` of the feature extractor's convolutions in an ONNX file written by fairseq-prune-onnx
    (torch's exporter names their nodes ``/conv_layers.N/...``)."""
    import onnx

    out = []
    for node in onnx.load(path, load_external_data=False).graph.node:
        if node.op_type == "Conv" and re.match(r"/conv_layers\.\d+/", node.name):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out.append((0, int(attrs["kernel_shape"][0]), int(attrs.get("strides", [1])[0])))
    return out


def ort_session(path: str, threads: int = 0):
    """An onnxruntime CPU session of ``path`` running ops on ``threads`` threads (0: onnxruntime's default)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxCtcModel:
    """A CTC model exported by ``fairseq-prune-onnx``, run by onnxruntime.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (0: its default).
    """

    def __init__(self, path: str, threads: int = 0) -> None:
        if not os.path.isfile(path):
            raise OnnxModelError(f"{path}: no such ONNX model file")
        import_onnxruntime()
        try:
            self.session = ort_session(path, threads)
        except Exception as e:  # onnxruntime's own exception types for unreadable files
            raise OnnxModelError(f"{path}: not an ONNX model onnxruntime can load ({type(e).__name__}: {e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        self.path = path
        self.meta: OnnxMetadata = read_metadata(props, path)
        self.dictionary = self.meta.dictionary()
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def has_padding_mask(self) -> bool:
        return self.meta.padding_mask_input

    @property
    def receptive_field(self) -> Optional[int]:
        """The fewest samples that give one output frame, from the metadata's ``conv_layers``, else (files written
        before it held them) from the graph's feature-extractor convolutions; ``None`` when neither says."""
        layers = self.meta.conv_layers or graph_conv_layers(self.path)
        return receptive_field(layers) if layers else None

    def emissions(self, source: np.ndarray, padding_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(B, T, V)`` CTC scores (what the metadata's ``output`` says: log-probs or logits) and ``(B,)`` valid
        frames, for ``(B, S)`` float32 audio (already normalised when the metadata says ``normalize``) and its
        ``(B, S)`` bool padding mask (True at padding)."""
        feeds = {"source": np.ascontiguousarray(source, dtype=np.float32)}
        if self.has_padding_mask:
            if padding_mask is None:
                padding_mask = np.zeros(source.shape, dtype=bool)
            feeds["padding_mask"] = np.ascontiguousarray(padding_mask, dtype=bool)
        elif padding_mask is not None and padding_mask.any():
            raise OnnxModelError(
                f"{self.path}: was exported without a padding-mask input, so it cannot decode a padded batch; "
                "decode with batch size 1 or export with a padding mask (fairseq-prune-onnx without --no-padding-mask)"
            )
        scores, lengths = self.session.run(self.output_names, feeds)
        return scores, lengths

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> List[str]:
        """Greedy CTC transcripts (words, post-processed as the metadata says) of 16 kHz mono waveforms, decoded
        together as one zero-padded batch; uses nothing but the ONNX file."""
        from fairseq.data.data_utils import post_process

        from ..text import greedy_units

        source, padding_mask = self.batch(waveforms)
        scores, lengths = self.emissions(source, padding_mask)
        units = greedy_units(torch.from_numpy(scores), torch.from_numpy(lengths), self.meta.blank_index)
        return [post_process(self.dictionary.string(torch.LongTensor(u)), self.meta.post_process) for u in units]

    def batch(self, waveforms: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """``(B, S)`` zero-padded float32 batch (each waveform normalised first when the metadata says
        ``normalize``, as fairseq's audio dataset does) and its ``(B, S)`` padding mask."""
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
        if self.meta.normalize:  # fairseq: F.layer_norm over the whole utterance
            waves = [torch.nn.functional.layer_norm(torch.from_numpy(w), w.shape).numpy() for w in waves]
        size = max(len(w) for w in waves)
        source = np.zeros((len(waves), size), dtype=np.float32)
        padding_mask = np.ones((len(waves), size), dtype=bool)
        for i, w in enumerate(waves):
            source[i, : len(w)] = w
            padding_mask[i, : len(w)] = False
        return source, padding_mask


# ---------------------------------------------------------------------------------------------------------------
# fairseq-prune-infer --backend onnxruntime


class FairseqOnnxAdapter:
    """Stands in for the fairseq model in ``fairseq-prune-infer``'s decoding loop: called like the model, it
    returns fairseq's ``net_output`` computed by onnxruntime, and ``get_logits`` gives it back unchanged (the
    graph already sets padded frames as fairseq's ``get_logits`` does)."""

    def __init__(self, model: OnnxCtcModel) -> None:
        self.onnx = model

    def __call__(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, **unused) -> Dict[str, Any]:
        """``source``/``padding_mask``: ``(B, S)``. Returns ``encoder_out`` ``(T, B, V)`` and ``padding_mask``
        ``(B, T)`` (``None`` when no frame is padded, as fairseq returns it)."""
        pad = None if padding_mask is None else padding_mask.cpu().numpy()
        scores, lengths = self.onnx.emissions(source.cpu().numpy(), pad)
        scores, lengths = torch.from_numpy(scores), torch.from_numpy(lengths)
        frames = torch.arange(scores.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
        return {"encoder_out": scores.transpose(0, 1), "padding_mask": frames if bool(frames.any()) else None}

    @staticmethod
    def get_logits(net_output: Dict[str, Any]) -> torch.Tensor:
        return net_output["encoder_out"]


def decoding_task_cfg(task: Dict[str, Any], data: str, labels: str):
    """The stored task config set up for decoding as a checkpoint's is (manifest folder and labels replaced, the
    fields that only shape training batches reset: :func:`fairseq_prune.inference.loading.set_decoding_task`)."""
    from omegaconf import OmegaConf

    from ..inference.loading import set_decoding_task

    cfg = OmegaConf.create(task)
    set_decoding_task(cfg, data, labels)
    return cfg


def read_onnx_model(cfg) -> Tuple[Any, List[Any], Any]:
    """``(manifest, audio entries, loaded model)`` for ``fairseq-prune-infer --backend onnxruntime``: the checks of
    the PyTorch path (manifest, its dictionary against the one stored in the ONNX file, every audio file), the
    stored task config reading the manifest, and onnxruntime in place of the model."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    from ..inference.dictionary import check_dictionary
    from ..inference.inputs import InferenceError, check_audio, check_manifest
    from ..inference.loading import LoadedModel

    try:
        model = OnnxCtcModel(cfg.path)
    except OnnxModelError as e:
        raise InferenceError(str(e)) from e
    if not model.has_padding_mask and cfg.batch_size != 1:
        raise InferenceError(f"{cfg.path}: was exported with --no-padding-mask, so it decodes one utterance at a "
                             "time: pass --batch-size 1 (or export it with a padding-mask input)")
    labels = cfg.labels or model.meta.labels
    manifest = check_manifest(cfg.data, cfg.gen_subset, labels)
    stored = {"target_dictionary": {"symbols": model.meta.symbols, "file": f"stored in {cfg.path}"}}
    check_dictionary(cfg.path, stored, manifest.dict_file)
    entries = check_audio(manifest.tsv, model.meta.sample_rate)
    task_cfg = decoding_task_cfg(model.meta.fairseq_task, cfg.data, labels)
    task = tasks.setup_task(task_cfg)
    field = model.receptive_field
    if field is None:
        logger.warning("%s: neither its metadata nor its graph gives the feature extractor's convolutions: audio "
                       "shorter than the model's receptive field is not refused", cfg.path)
    loaded = LoadedModel(cfg.path, FairseqOnnxAdapter(model), task, OmegaConf.create({"task": task_cfg}),
                         model.meta.model, labels, model.meta.post_process, "cpu", field or 1)
    return manifest, entries, loaded
