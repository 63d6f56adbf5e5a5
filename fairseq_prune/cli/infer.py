"""``fairseq-prune-infer``: decode a manifest subset with a CTC checkpoint, like fairseq's
``examples/speech_recognition/new/infer.py``, and report WER, intent accuracy and speed.

    fairseq-prune-infer MANIFEST_DIR --path CHECKPOINT --gen-subset test --results-path OUT [--max-tokens N]

Writes ``hypo.word``, ``hypo.units``, ``ref.word``, ``ref.units`` (fairseq's format and order) and
``summary.json`` to ``--results-path``; the last line printed is the summary. See docs/inference.md.
"""
import argparse
import dataclasses
import logging
import math
import sys
from typing import Any, Dict, List, Optional, Type, TypeVar

from tqdm import tqdm

from ..inference.allocator import reuse_freed_memory
from ..inference.inputs import InferenceError
from ..inference.decoding import BeamOptions
from ..inference.config import POST_PROCESS_CHOICES, InferenceConfig
from ..inference.loop import Backend, read_pytorch_model, run_inference
from ..inference.scoring import summary_line
from ..io.safe_output import OutputError
from ..io.signals import Terminated, sigterm_raises
from .arguments import bounded_int
from .startup import add_verbose_option

logger = logging.getLogger("fairseq_prune.infer")


def get_parser() -> argparse.ArgumentParser:
    """The command-line options (named after fairseq's, see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="fairseq-prune-infer",
        description="Decode a fairseq manifest subset with a wav2vec2 CTC checkpoint (ours, exported or plain "
        "fairseq wav2vec_ctc); write fairseq infer.py's result files and print WER, intent accuracy, audio "
        "seconds, wall seconds and real-time factor.",
    )
    add_data_options(parser)
    add_run_options(parser)
    add_lm_options(parser.add_argument_group(
        "beam search with a KenLM language model (needs the flashlight-text package)"))
    return parser


def add_data_options(p: argparse.ArgumentParser) -> None:
    """What is decoded, with what, and where the results go."""
    p.add_argument("data", help="manifest directory: {subset}.tsv, {subset}.{labels}, dict.{labels}.txt")
    p.add_argument("--path", required=True, help="model checkpoint (training checkpoint or exported model); with "
                   "--backend onnxruntime, an ONNX model written by fairseq-prune-onnx")
    p.add_argument("--gen-subset", default="test", help="subset to decode (default: %(default)s)")
    p.add_argument("--labels", default=None, help="label file extension (default: the checkpoint's task.labels)")
    p.add_argument("--results-path", default=None,
                   help="write hypo.word, hypo.units, ref.word, ref.units and summary.json here")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Batching, device, backend, post-processing and output verbosity."""
    p.add_argument("--max-tokens", type=bounded_int(0, note="0: no limit"), default=3000000,
                   help="max audio samples per batch, padding included; 0: no limit (default: %(default)s, as "
                   "fairseq's infer.yaml)")
    p.add_argument("--batch-size", type=bounded_int(1), default=None,
                   help="max utterances per batch (default: no limit)")
    p.add_argument("--cpu", action="store_true", help="decode on CPU even when a GPU is available")
    p.add_argument("--backend", choices=("pytorch", "onnxruntime"), default="pytorch",
                   help="what runs the model: PyTorch (a checkpoint) or onnxruntime on CPU (an ONNX model from "
                   "fairseq-prune-onnx; needs pip install 'fairseq-prune[onnx]') (default: %(default)s)")
    p.add_argument("--post-process", default=None, choices=POST_PROCESS_CHOICES,
                   help="units -> words (default: the checkpoint's criterion.post_process, else letter)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the batch order among equally long utterances (default: %(default)s, fairseq's)")
    p.add_argument("--num-workers", type=bounded_int(0, note="0: in the main process"), default=1,
                   help="data loading processes (default: %(default)s)")
    p.add_argument("--skip-bad-audio", action="store_true",
                   help="skip utterances that cannot be decoded (NaN or infinite samples, shorter than the model's "
                   "receptive field) with a warning each and their count in summary.json (default: refuse the run)")
    p.add_argument("--strict-labels", action="store_true",
                   help="refuse label symbols the dictionary lacks (default: a warning; they become <unk>)")
    p.add_argument("--quiet", action="store_true", help="no per-utterance HYPO/REF lines and no progress bar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose_option(p)


def add_lm_options(lm: argparse._ArgumentGroup) -> None:
    """The decoder and the beam search's options (the fields of :class:`~fairseq_prune.inference.decoding.BeamOptions`)."""
    lm.add_argument("--decoder", choices=("viterbi", "kenlm"), default=None,
                    help="viterbi: greedy CTC; kenlm: lexicon beam search with --kenlm-model "
                    "(default: kenlm when --kenlm-model is given, else viterbi)")
    lm.add_argument("--kenlm-model", default=None, help="KenLM language model (binary or ARPA) over words")
    lm.add_argument("--lexicon", default=None, help="lexicon: a word, then its spelling in model units, per line")
    lm.add_argument("--beam", type=bounded_int(1), default=5, help="beam size (default: %(default)s)")
    lm.add_argument("--beam-threshold", type=float, default=50.0, help="beam score threshold (default: %(default)s)")
    lm.add_argument("--beam-size-token", type=bounded_int(1), default=None,
                    help="tokens considered per frame (default: all)")
    lm.add_argument("--lm-weight", type=float, default=2.0, help="language model weight (default: %(default)s)")
    lm.add_argument("--word-score", type=float, default=-1.0, help="word insertion score (default: %(default)s)")
    lm.add_argument("--unk-weight", type=float, default=-math.inf,
                    help="score of unknown words (default: %(default)s)")
    lm.add_argument("--sil-weight", type=float, default=0.0, help="silence score (default: %(default)s)")


T = TypeVar("T")


def from_args(cls: Type[T], args: argparse.Namespace, **computed: Any) -> T:
    """Dataclass ``cls`` with each field taken from the option of the same name, except those in ``computed``."""
    taken = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in computed}
    return cls(**taken, **computed)


def beam_options(args: argparse.Namespace) -> Optional[BeamOptions]:
    """Beam-search options, or ``None`` for greedy decoding; :class:`InferenceError` for inconsistent flags."""
    decoder = args.decoder or ("kenlm" if args.kenlm_model or args.lexicon else "viterbi")
    if decoder == "viterbi":
        if args.kenlm_model or args.lexicon:
            raise InferenceError("--decoder viterbi does not use --kenlm-model/--lexicon; drop them or use --decoder kenlm")
        return None
    if not args.kenlm_model or not args.lexicon:
        missing = "--kenlm-model" if not args.kenlm_model else "--lexicon"
        raise InferenceError(f"beam-search decoding needs both --kenlm-model and --lexicon; {missing} is missing")
    return from_args(BeamOptions, args)


def config_from_args(args: argparse.Namespace) -> InferenceConfig:
    """The :class:`InferenceConfig` the options ask for (``--max-tokens 0``: no limit)."""
    return from_args(
        InferenceConfig,
        args,
        max_tokens=args.max_tokens if args.max_tokens and args.max_tokens > 0 else None,
        beam=beam_options(args),
        progress=not args.no_progress,
    )


def backend(name: str) -> Backend:
    """The model reader of ``--backend``: fairseq's PyTorch model, or the ONNX file run by onnxruntime."""
    if name == "onnxruntime":
        from ..onnx.runtime import read_onnx_model

        return read_onnx_model
    return read_pytorch_model


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Decode as ``args`` say, print the summary line last, and return the summary (also ``summary.json``)."""
    cfg = config_from_args(args)
    reuse_freed_memory()  # large activations keep their pages between batches (inference.allocator)
    summary = run_inference(cfg, log=lambda line: tqdm.write(line, file=sys.stderr), backend=backend(cfg.backend))
    if args.results_path:
        logger.info("wrote hypo.word, hypo.units, ref.word, ref.units and summary.json to %s", args.results_path)
    print(summary_line(summary), flush=True)
    return summary


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: bad input ends with one ``error:`` line on stderr and exit status 2, SIGTERM
    with one line and status 143 (other failures raise with a traceback)."""
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO, stream=sys.stderr,
        force=True,
    )
    # fairseq's audio reader logs each failed attempt before it gives up; the error line says why it failed
    logging.getLogger("fairseq.data.audio.raw_audio_dataset").setLevel(logging.ERROR)
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_raises():  # the result files' temporary files are removed on SIGTERM too
            main(args)
    except (InferenceError, OutputError) as e:  # OutputError: a result file could not be written (a full disk)
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line
        parser.exit(2, f"fairseq-prune-infer: error: {message}\n")
    except Terminated as e:
        parser.exit(e.code, "fairseq-prune-infer: terminated by SIGTERM; unfinished result files were removed\n")


if __name__ == "__main__":
    cli_main()
