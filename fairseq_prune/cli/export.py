"""``fairseq-prune-export IN.pt OUT.pt``: write the physically pruned model of a gated checkpoint."""
import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional

import torch

from ..io.checkpoints import CheckpointError, atomic_outputs
from ..export.prune import exported_state, load_gated, prune, target_dictionary
from ..cost import Wav2Vec2Shape
from ..export.report import draw_architecture, format_latency, format_table
from ..inference.allocator import reuse_freed_memory
from ..latency import LatencyTable
from ..models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning
from ..io.safe_output import OutputError, check_output, claim, sweep_stale, writing
from ..io.signals import Terminated, sigterm_raises
from .startup import add_verbose_option

logger = logging.getLogger("fairseq_prune.export")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-prune-export",
        description="Remove what the hard concrete gates of a wav2vec2_ctc_pruning checkpoint closed and write a "
        "compact fairseq checkpoint of the same model class (per-layer sizes in its config, no gates).",
    )
    p.add_argument("input", help="checkpoint trained with model wav2vec2_ctc_pruning and gates (e.g. checkpoint_best.pt)")
    p.add_argument("output", help="where to write the exported checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT, --plot and --summary-json if they exist")
    p.add_argument(
        "--round-to", type=int, default=1, metavar="N",
        help="keep conv channels and FFN units in multiples of N per structure (extra units are the closed ones "
        "with the largest log alpha, kept with weight 0: outputs do not change)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the pruned architecture per layer")
    p.add_argument("--summary-json", metavar="FILE.json",
                   help="also write the pruning summary as JSON (-: to stdout, the table then goes to stderr)")
    p.add_argument(
        "--dictionary", metavar="DICT.txt",
        help="the model's dictionary, stored in OUTPUT so that decoding can check the one it is given (default: "
        "dict.{labels}.txt of the training run's task.data)",
    )
    p.add_argument("--latency-table", metavar="TABLE.json",
                   help="a latency table (fairseq-prune-profile) of the dense architecture: the report adds the "
                        "latency it predicts for the exported model, as a ratio of the dense model's, beside the "
                        "MACs and parameters (stored in the summary as 'latency')")
    p.add_argument("--measure-latency", action="store_true",
                   help="with --latency-table: also time the dense and the exported model side by side with the "
                        "table's backend, threads, batch and input length (the dense model at random weights; "
                        "fairseq-prune-latency's check) and report the measured ratio beside the predicted one")
    add_verbose_option(p)
    return p


def plot_format(path: str) -> str:
    """The image format of ``path``'s extension (png without one); an :class:`OutputError` for one matplotlib
    cannot write."""
    from matplotlib.figure import Figure

    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(f"{path}: matplotlib cannot write .{fmt} images (--plot takes {', '.join(sorted(supported))})")
    return fmt


def save_plot(summary: Dict, path: str, fmt: str = "png") -> None:
    """Write :func:`draw_architecture`'s figure to ``path`` as ``fmt``."""
    import matplotlib.pyplot as plt

    fig = draw_architecture(summary)
    try:
        fig.savefig(path, dpi=110, format=fmt)
    finally:
        plt.close(fig)


def save_json(obj: Dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def check_outputs(args: argparse.Namespace) -> Dict[str, str]:
    """The outputs asked for (option -> path), each checked before any work: see :func:`check_output` (every one
    needs ``--force`` to replace a file; ``--summary-json -`` streams to stdout)."""
    outputs = {"OUTPUT": args.output, "--plot": args.plot, "--summary-json": args.summary_json}
    outputs = {what: path for what, path in outputs.items() if path}
    seen: Dict[str, str] = {}
    for what, path in outputs.items():
        target = check_output(path, what, force=args.force, stream=what == "--summary-json")
        if target == "-":
            continue
        other = seen.setdefault(os.path.realpath(target), what)
        if other != what:
            raise OutputError(f"{path}: {other} and {what} name the same file")
        if what == "--plot":
            plot_format(path)
        sweep_stale(os.path.dirname(os.path.abspath(target)))
    return outputs


def write_outputs(outputs: Dict[str, str], new_state: Dict, force: bool = True) -> None:
    """The exported checkpoint, the plot and the summary: all of them, or (when one fails) none; a summary to
    ``-`` is printed to stdout once the files are in place."""
    summary = new_state["pruning_summary"]
    files = {what: path for what, path in outputs.items() if path != "-"}
    paths = list(files.values())
    with writing(", ".join(paths)), atomic_outputs(paths, force=force) as tmps:
        for (what, path), tmp in zip(files.items(), tmps):
            with writing(path, tmp):
                if what == "OUTPUT":
                    torch.save(new_state, tmp)
                elif what == "--plot":
                    save_plot(summary, tmp, plot_format(path))
                else:
                    save_json(summary, tmp)
    if len(files) < len(outputs):
        print(json.dumps(summary, indent=2), flush=True)


def latency_summary(table: LatencyTable, state: Dict, result, measure: bool) -> Dict:
    """The latency ``table`` predicts for the exported model and for the dense architecture it was pruned from
    (refused when the table was made for another one), and with ``measure`` both timed side by side."""
    from .latency_check import check_model

    w2v_args = state["cfg"].model.w2v_args
    dense = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, result.model.w2v_encoder.proj.out_features,
                                             **result.sizes_before.as_dict(skip_empty=True)).eval()
    table.check(Wav2Vec2Shape.from_w2v_cfg(w2v_args.model))
    dense_ms, ms = float(table.predict(result.sizes_before)), float(table.predict(result.sizes_after))
    out = {"table": os.path.abspath(table.path), "device": table.data.get("device"),
           "backend": table.data.get("backend", "eager"), "threads": table.data.get("threads"),
           "batch": table.data.get("batch"), "seconds": table.data.get("seconds"),
           "predicted_dense_ms": round(dense_ms, 3), "predicted_ms": round(ms, 3),
           "predicted_latency_ratio": round(ms / dense_ms, 4)}
    if measure:
        reuse_freed_memory()  # timed as fairseq-prune-infer runs models (inference.allocator)
        checked = check_model(table, dense, result.model, rounds=10)
        out.update({k: checked[k] for k in ("measured_latency_ratio", "measured_speedup", "dense_ms", "ms")})
    return out


def main(args: argparse.Namespace) -> Dict:
    if args.round_to < 1:
        raise ValueError(f"--round-to must be >= 1, got {args.round_to}")
    if args.measure_latency and not args.latency_table:
        raise ValueError("--measure-latency needs --latency-table (the table's settings say what to time)")
    table = LatencyTable.load(args.latency_table) if args.latency_table else None  # read before any work
    outputs = check_outputs(args)
    with claim(outputs.values()):  # from the checks to the commit: a second export of these files refuses
        state, model = load_gated(args.input)
        dictionary = target_dictionary(state, model.w2v_encoder.proj.out_features, args.dictionary, args.input)
        result = prune(model, state["cfg"].model, round_to=args.round_to)
        new_state = exported_state(state, result, os.path.abspath(args.input), dictionary)
        if table is not None:
            new_state["pruning_summary"]["latency"] = latency_summary(table, state, result, args.measure_latency)
        report = sys.stderr if args.summary_json == "-" else sys.stdout  # stdout holds the JSON alone
        write_outputs(outputs, new_state, force=args.force)
    print(format_table(result), file=report)
    if table is not None:
        print(format_latency(new_state["pruning_summary"]["latency"]), file=report)
    n = sum(p.numel() for p in result.model.parameters())
    print(f"wrote {args.output}: {n / 1e6:.3f}M parameters", file=report)
    return new_state["pruning_summary"]


def cli_main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)  # importing fairseq/hydra can leave the root logger at DEBUG
    args = get_parser().parse_args(argv)
    try:
        with sigterm_raises():
            main(args)
    except (CheckpointError, FileExistsError, ValueError) as e:
        print(f"fairseq-prune-export: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Terminated as e:
        print("fairseq-prune-export: terminated by SIGTERM; unfinished outputs were removed", file=sys.stderr)
        sys.exit(e.code)


if __name__ == "__main__":
    cli_main()
