"""What ``fairseq-prune-infer`` is asked to do (:class:`InferenceConfig`), and the checks that need nothing to be
loaded (:func:`check_options`)."""
from dataclasses import dataclass
from typing import Optional

from .inputs import InferenceError, check_file
from .decoding import BeamOptions, import_ctc_decoder
from .results import check_result_files
from ..io.safe_output import OutputError, check_output_folder, sweep_stale

#: values accepted by fairseq's ``post_process``
POST_PROCESS_CHOICES = ("letter", "sentencepiece", "wordpiece", "silence", "_EOW", "subword_nmt", "none")


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
    #: skip (with a warning each) utterances that cannot be decoded (NaN/inf samples, shorter than the model's
    #: receptive field) instead of refusing the run; their count goes to summary.json
    skip_bad_audio: bool = False
    #: refuse label symbols that the dictionary lacks (otherwise: a warning; they become <unk>)
    strict_labels: bool = False


def check_options(cfg: InferenceConfig) -> None:
    """What can be checked before anything is loaded: batching, the results folder and the result files in it
    (temporary files and lock files that killed runs left there are removed), the LM files and the beam-search
    package."""
    if cfg.max_tokens is None and cfg.batch_size is None:
        raise InferenceError("give --max-tokens or --batch-size")
    if cfg.results_path is not None:
        try:
            check_output_folder(cfg.results_path, "--results-path")
            check_result_files(cfg.results_path)
        except OutputError as e:
            raise InferenceError(str(e)) from e
        sweep_stale(cfg.results_path)
    if cfg.beam is not None:
        check_file(cfg.beam.kenlm_model, "--kenlm-model")
        check_file(cfg.beam.lexicon, "--lexicon")
        import_ctc_decoder()
