"""``fairseq-prune-export IN.pt OUT.pt``: write the physically pruned model of a gated checkpoint."""
import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional

import torch

from ..checkpoints import CheckpointError, atomic_outputs
from ..cost import Cost, totals
from ..export import ExportResult, exported_state, load_gated, prune, target_dictionary
from ..safe_output import OutputError, Terminated, check_output, sigterm_raises, sweep_stale, writing

logger = logging.getLogger("fairseq_prune.export")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-prune-export",
        description="Remove what the hard concrete gates of a wav2vec2_ctc_pruning checkpoint closed and write a "
        "compact fairseq checkpoint of the same model class (per-layer sizes in its config, no gates).",
    )
    p.add_argument("input", help="checkpoint trained with model wav2vec2_ctc_pruning and gates (e.g. checkpoint_best.pt)")
    p.add_argument("output", help="where to write the exported checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument(
        "--round-to", type=int, default=1, metavar="N",
        help="keep conv channels and FFN units in multiples of N per structure (extra units are the closed ones "
        "with the largest log alpha, kept with weight 0: outputs do not change)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the pruned architecture per layer")
    p.add_argument("--summary-json", metavar="FILE.json", help="also write the pruning summary as JSON")
    p.add_argument(
        "--dictionary", metavar="DICT.txt",
        help="the model's dictionary, stored in OUTPUT so that decoding can check the one it is given (default: "
        "dict.{labels}.txt of the training run's task.data)",
    )
    return p


#: how reports name a model family (``w2v_args.model._name``)
FAMILY_NAMES = {"wav2vec2": "wav2vec2", "hubert": "HuBERT"}


def _fmt(c: Cost) -> str:
    return f"{float(c.params) / 1e6:8.3f}M {float(c.macs) / 1e9:8.3f}G"


def format_table(result: ExportResult) -> str:
    """Per-layer sizes and costs (params, GMACs at 10 s) before -> after, per component and in total."""
    s = result.summary
    b, a = s["before"], s["after"]
    family = FAMILY_NAMES.get(s.get("family", "wav2vec2"), s.get("family"))
    lines = [f"{family} encoder; parameters and GMACs for {s['reference_seconds']:.0f} s of audio",
             "conv layer  channels          params / GMACs before  ->  after"]
    for i, (cb, ca) in enumerate(zip(b["conv_channels"], a["conv_channels"])):
        lines.append(f"  {i:<9} {cb:>5} -> {ca:<5}  {_fmt(result.before[f'conv.{i}'])}  ->  {_fmt(result.after[f'conv.{i}'])}")
    lines.append("layer  heads       FFN units        params / GMACs before  ->  after")
    for i, (hb, ha, ub, ua) in enumerate(zip(b["attention_heads"], a["attention_heads"], b["ffn_units"], a["ffn_units"])):
        keys = [f"layers.{i}.{k}" for k in ("attention", "attention_products", "ffn", "norms")]
        cb = sum((result.before[k] for k in keys), Cost())
        ca = sum((result.after[k] for k in keys), Cost())
        lines.append(f"  {i:<4} {hb:>2} -> {ha:<3}  {ub:>5} -> {ua:<5}  {_fmt(cb)}  ->  {_fmt(ca)}")
    lines.append("component            params / GMACs before  ->  after")
    for name in b["groups"]:
        gb, ga = b["groups"][name], a["groups"][name]
        lines.append(f"  {name:<18} {_fmt(Cost(gb['params'], gb['macs']))}  ->  {_fmt(Cost(ga['params'], ga['macs']))}")
    tb, ta = totals(result.before)["total"], totals(result.after)["total"]
    lines.append(f"  {'total':<18} {_fmt(tb)}  ->  {_fmt(ta)}")
    lines.append(
        f"  ratio after/before: params {float(ta.params) / float(tb.params):.3f}, MACs {float(ta.macs) / float(tb.macs):.3f}"
    )
    if "unrounded_macs" in s:
        extra = float(ta.macs) - s["unrounded_macs"]
        lines.append(
            f"  --round-to {s['round_to']}: {extra / 1e9:.3f} GMACs more than without rounding "
            f"({extra / s['unrounded_macs'] * 100:.1f}%)"
        )
    return "\n".join(lines)


def draw_architecture(summary: Dict, title: Optional[str] = None):
    """A figure with bars per layer: conv channels, attention heads and FFN units kept, over the sizes before
    export."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, a = summary["before"], summary["after"]
    panels = [("conv channels", "conv_channels", "CNN layer"), ("attention heads", "attention_heads", "Transformer layer"),
              ("FFN units", "ffn_units", "Transformer layer")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (label, key, xlabel) in zip(axes, panels):
        x = list(range(len(b[key])))
        ax.bar(x, b[key], color="#d9d9d9", label="before")
        ax.bar(x, a[key], color="#2b6cb0", label="kept")
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        ax.set_xticks(x)
    axes[0].legend(loc="lower left", fontsize=8)
    ratio = a["macs"] / b["macs"]
    fig.suptitle(title or f"pruned architecture: {a['params'] / 1e6:.2f}M params, {a['macs'] / 1e9:.2f} GMACs "
                 f"({ratio:.0%} of the MACs) at {summary['reference_seconds']:.0f} s")
    fig.tight_layout()
    return fig


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
    """The outputs asked for (option -> path), each checked before any work: see :func:`check_output`."""
    outputs = {"OUTPUT": args.output, "--plot": args.plot, "--summary-json": args.summary_json}
    outputs = {what: path for what, path in outputs.items() if path}
    seen: Dict[str, str] = {}
    for what, path in outputs.items():
        other = seen.setdefault(os.path.realpath(path), what)
        if other != what:
            raise OutputError(f"{path}: {other} and {what} name the same file")
        check_output(path, what, force=args.force or what != "OUTPUT")
        if what == "--plot":
            plot_format(path)
        sweep_stale(os.path.dirname(os.path.abspath(path)))
    return outputs


def write_outputs(outputs: Dict[str, str], new_state: Dict) -> None:
    """The exported checkpoint, the plot and the summary: all of them, or (when one fails) none."""
    summary = new_state["pruning_summary"]
    paths = list(outputs.values())
    with writing(", ".join(paths)), atomic_outputs(paths) as tmps:
        for (what, path), tmp in zip(outputs.items(), tmps):
            with writing(path):
                if what == "OUTPUT":
                    torch.save(new_state, tmp)
                elif what == "--plot":
                    save_plot(summary, tmp, plot_format(path))
                else:
                    save_json(summary, tmp)


def main(args: argparse.Namespace) -> Dict:
    if args.round_to < 1:
        raise ValueError(f"--round-to must be >= 1, got {args.round_to}")
    outputs = check_outputs(args)
    state, model = load_gated(args.input)
    dictionary = target_dictionary(state, model.w2v_encoder.proj.out_features, args.dictionary)
    result = prune(model, state["cfg"].model, round_to=args.round_to)
    new_state = exported_state(state, result, os.path.abspath(args.input), dictionary)
    write_outputs(outputs, new_state)
    print(format_table(result))
    n = sum(p.numel() for p in result.model.parameters())
    print(f"wrote {args.output}: {n / 1e6:.3f}M parameters")
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
