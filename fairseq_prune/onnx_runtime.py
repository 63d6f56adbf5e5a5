"""Running a model written by ``fairseq-prune-onnx`` with onnxruntime.

* :func:`ort_session`: an onnxruntime CPU session with a given number of threads.
* :class:`OnnxCtcModel`: the ONNX model and what its metadata says (dictionary, blank, post-processing, audio
  normalisation); ``emissions`` and ``transcribe`` need nothing but the ``.onnx`` file.
* :func:`load_onnx_for_inference`: the ``--backend onnxruntime`` path of ``fairseq-prune-infer``: the same manifest,
  task, batching, decoders and result files as the PyTorch path, with the forward pass run by onnxruntime.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .onnx_metadata import OnnxMetadata, OnnxModelError, read_metadata


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

        from .decoding import greedy_units

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
