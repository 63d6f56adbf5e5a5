"""``fairseq-prune-onnx CHECKPOINT OUT.onnx``: write a wav2vec2 CTC model (an exported pruned model, a dense
``wav2vec2_ctc_pruning`` model or fairseq's ``wav2vec_ctc``) as an ONNX model that onnxruntime decodes alone.

The graph takes ``source`` ``(batch, samples)`` float32 audio and, unless ``--no-padding-mask``, ``padding_mask``
``(batch, samples)`` bool (True at padding); it returns the CTC log-probabilities (``--output logits``: the
logits) ``(batch, frames, vocab)`` and ``lengths`` ``(batch,)`` int64, the valid frames per utterance. The
dictionary, intents and decoding settings go into the model's metadata (see ``fairseq_prune/onnx_metadata.py``).

Before the file appears, onnxruntime's outputs are compared with PyTorch's on random audio of several lengths
(and a padded batch); if they differ by more than 1e-4, nothing is written.
"""
import argparse
import logging
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from ..io.checkpoints import CheckpointError, atomic_output, model_name, read_checkpoint
from ..io.dictionaries import find_dictionary_file, looked_in, stored_symbols
from ..io.safe_output import OutputError, check_output, claim, sweep_stale, writing
from ..layer_sizes import is_gate_key, parse_conv_layers
from ..onnx.export import (CHECK_TOLERANCE, MIN_OPSET, OPSET, OnnxExportError, OnnxSpec, check_onnx, export_onnx,
                            max_opset)
from ..onnx.metadata import OnnxMetadata, OnnxModelError, dictionary_from_symbols, read_intents
from ..onnx.runtime import import_onnxruntime
from .arguments import bounded_int
from .startup import add_verbose_option

logger = logging.getLogger("fairseq_prune.onnx")

#: models this command exports (both hold fairseq's Wav2VecEncoder layout and get_logits)
EXPORTABLE = ("wav2vec2_ctc_pruning", "wav2vec_ctc")


DESCRIPTION = ("Write a wav2vec2 CTC checkpoint (exported by fairseq-prune-export, or fairseq's wav2vec_ctc) as ONNX "
               "with dynamic batch and audio length, the dictionary in its metadata, checked against PyTorch with "
               "onnxruntime before it is written.")


def get_parser() -> argparse.ArgumentParser:
    """The command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(prog="fairseq-prune-onnx", description=DESCRIPTION)
    p.add_argument("checkpoint", help="exported (pruned) model, dense wav2vec2_ctc_pruning or wav2vec_ctc checkpoint")
    p.add_argument("output", help="the ONNX file to write (its folder must exist)")
    p.add_argument("--dict", dest="dict_file", default=None,
                   help="the model's dictionary (default: the one fairseq-prune-export stored in the checkpoint, "
                   "else dict.{labels}.txt in its task.data folder or beside the checkpoint, else the one fairseq's "
                   "trainer stored in it); an intents.json next to it gives the intents")
    p.add_argument("--labels", default=None, help="label extension (default: the checkpoint's task.labels, else ltr)")
    p.add_argument("--output", dest="scores", choices=("log-probs", "logits"), default="log-probs",
                   help="what the first output holds (default: %(default)s)")
    p.add_argument("--no-padding-mask", action="store_true",
                   help="no padding_mask input: every utterance of a batch must then have the same length")
    p.add_argument("--opset", type=bounded_int(MIN_OPSET, max_opset()), default=OPSET,
                   help=f"ONNX opset, {MIN_OPSET} to {max_opset()} (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    add_verbose_option(p)
    return p


def check_output_path(path: str, force: bool) -> None:
    """Refuse before any work what :func:`~fairseq_prune.io.safe_output.check_output` refuses (an existing file
    without ``force``, a folder, a FIFO or device, a folder that takes no new files). Missing folders are made when
    the file is written, as fairseq-prune-export makes them, and removed again if the export fails."""
    target = check_output(path, "OUTPUT", force)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(folder):
        sweep_stale(folder)


def read_exportable(path: str) -> Dict[str, Any]:
    """The checkpoint, if it holds a model this command exports (not a pruning run's gated checkpoint)."""
    state = read_checkpoint(path)
    name = model_name(state)
    if name not in EXPORTABLE:
        raise CheckpointError(f"{path}: holds model {name!r}; fairseq-prune-onnx exports {' or '.join(EXPORTABLE)}")
    gates = [k for k in state["model"] if is_gate_key(k)]
    if gates:
        raise CheckpointError(
            f"{path}: holds hard concrete gates ({gates[0]}, ...), i.e. a pruning run's checkpoint: export the "
            f"compact model first (fairseq-prune-export {path} pruned.pt), then convert that"
        )
    return state


def model_dictionary(path: str, state: Dict[str, Any], given: Optional[str], labels: str) -> Tuple[Any, str]:
    """``(dictionary, its file)``: ``--dict``; else the one fairseq-prune-export stored in the checkpoint
    (``target_dictionary``); else ``dict.{labels}.txt`` in the checkpoint's ``task.data`` folder, else beside the
    checkpoint; else the one fairseq's trainer stored (``task_state``). A file must hold the symbols the checkpoint
    stores, if it stores any (:mod:`fairseq_prune.io.dictionaries`)."""
    from fairseq.data import Dictionary

    stored = stored_symbols(state)
    exported = bool(state.get("target_dictionary", None))
    if given is None and exported:
        return dictionary_from_symbols(stored[0], path), stored[1]
    if given is not None and not os.path.isfile(given):
        raise OnnxModelError(f"{given}: dictionary not found (--dict)")
    found, candidates = (given, [given]) if given else find_dictionary_file(path, state, labels)
    if found is None:
        if stored:
            return dictionary_from_symbols(stored[0], path), f"{path} ({stored[1]})"
        raise OnnxModelError(f"{path}: stores no dictionary and none was found ({looked_in(candidates)}); give the "
                             "model's dictionary with --dict")
    try:
        dictionary = Dictionary.load(found)
    except (ValueError, RuntimeError, UnicodeDecodeError) as err:
        raise OnnxModelError(f"{found}: not a fairseq dictionary ({err})") from err
    if stored and stored[0] != dictionary.symbols:
        hint = "drop --dict to use the stored one" if given else "give the model's dictionary with --dict"
        raise OnnxModelError(f"{found}: not the dictionary {path} was {'exported' if exported else 'trained'} with "
                             f"({stored[1]}); {hint}")
    return dictionary, found


def build_model(path: str, state: Dict[str, Any], dictionary) -> Any:
    """The checkpoint's model (eval mode), built as fairseq's loader does, for ``dictionary``'s output units."""
    from fairseq import models

    rows = state["model"]["w2v_encoder.proj.weight"].shape[0] if "w2v_encoder.proj.weight" in state["model"] else None
    if rows != len(dictionary):
        raise OnnxModelError(f"{path}: its CTC output layer has {rows} outputs but the dictionary has "
                             f"{len(dictionary)} symbols (--dict: give the dictionary it was trained with)")
    model = models.build_model(state["cfg"].model, SimpleNamespace(target_dictionary=dictionary), from_checkpoint=True)
    try:
        model.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"].model)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model its config describes: {e}") from e
    return model.eval()


def metadata(path: str, state: Dict[str, Any], dictionary, dict_file: str, labels: str, spec: OnnxSpec) -> OnnxMetadata:
    """What goes into the ONNX model's metadata_props."""
    cfg = state["cfg"]
    criterion = cfg.get("criterion", None)
    post = (criterion.get("post_process", None) if criterion is not None else None) or "letter"
    return OnnxMetadata(
        model=model_name(state),
        source=os.path.abspath(path),
        log_probs=spec.log_probs,
        padding_mask_input=spec.padding_mask_input,
        symbols=list(dictionary.symbols),
        post_process=str(post),
        labels=labels,
        intents=read_intents(dict_file, dictionary),
        sample_rate=int(cfg.task.get("sample_rate", None) or 16000),
        normalize=bool(cfg.task.get("normalize", False)),
        fairseq_task=OmegaConf.to_container(cfg.task, resolve=True, enum_to_str=True),
        conv_layers=[list(layer) for layer in parse_conv_layers(cfg.model.w2v_args.model.conv_feature_layers)],
    )


def convert(model, meta: OnnxMetadata, spec: OnnxSpec, output: str, opset: int = OPSET,
            force: bool = True) -> Tuple[float, List]:
    """Export, write to a temporary file next to ``output``, check it with onnxruntime, then commit (without
    ``force``, never over a file that appeared meanwhile): returns (max abs difference, batches checked). On any
    failure nothing is left behind; a failed write (a full disk) is one line."""
    data = export_onnx(model, spec, meta.to_props(), opset=opset)
    with writing(output), atomic_output(output, ".onnx", force) as tmp:
        with writing(output, tmp), open(tmp, "wb") as f:
            f.write(data)
        report = check_onnx(tmp, model, spec)
    return report.max_abs_diff, report.batches


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Convert as ``args`` say; print what was written and the check; return both."""
    check_output_path(args.output, args.force)
    with claim([args.output]):  # from the check to the commit: a second writer of OUTPUT refuses
        return convert_checkpoint(args)


def convert_checkpoint(args: argparse.Namespace) -> Dict[str, Any]:
    """:func:`main` once OUTPUT is checked and claimed."""
    import_onnxruntime()
    import onnx  # noqa: F401  (the extra installs both)

    t0 = time.perf_counter()
    state = read_exportable(args.checkpoint)
    labels = args.labels or str(state["cfg"].task.get("labels", None) or "ltr")
    dictionary, dict_file = model_dictionary(args.checkpoint, state, args.dict_file, labels)
    model = build_model(args.checkpoint, state, dictionary)
    spec = OnnxSpec(log_probs=args.scores == "log-probs", padding_mask_input=not args.no_padding_mask)
    meta = metadata(args.checkpoint, state, dictionary, dict_file, labels, spec)
    diff, batches = convert(model, meta, spec, args.output, args.opset, args.force)
    inputs = "source (batch, samples) float32"
    if not args.no_padding_mask:
        inputs += ", padding_mask (batch, samples) bool"
    size = os.path.getsize(args.output) / 1e6
    print(f"wrote {args.output} ({size:.1f} MB, {time.perf_counter() - t0:.1f} s): inputs {inputs}; outputs "
          f"{spec.output_names[0]} (batch, frames, {len(dictionary)}) float32, lengths (batch,) int64; metadata: "
          f"dictionary {dict_file} ({len(dictionary)} symbols), {len(meta.intents)} intents")
    shapes = "; ".join("x".join(map(str, b)) for b in batches)
    print(f"checked: onnxruntime vs PyTorch, max |difference| {diff:.2e} (limit {CHECK_TOLERANCE:.0e}) on batches of "
          f"{shapes} samples")
    return {"output": args.output, "max_abs_diff": diff, "batches": batches, "metadata": meta.to_props()}


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: bad input ends with one ``error:`` line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)  # importing fairseq/hydra can leave the root logger at DEBUG
    args = get_parser().parse_args(argv)
    try:
        main(args)
    except (CheckpointError, OnnxExportError, OnnxModelError, OutputError, FileExistsError) as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"fairseq-prune-onnx: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli_main()
