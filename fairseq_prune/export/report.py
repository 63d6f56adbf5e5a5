"""The report of an export: the pruning summary (stored in the exported checkpoint, ``--summary-json``), the table
``fairseq-prune-export`` prints and the architecture plot (``--plot``).

The summary's per-layer keys are the :class:`~fairseq_prune.layer_sizes.LayerSizes` field names
(``conv_channels``, ``attention_heads``, ``ffn_units``), before and after export, with the costs of each.
"""
from typing import Dict, Optional

from ..cost import REFERENCE_SAMPLES, Cost, group_breakdown, totals
from .result import ExportResult


def _costs(parts: Dict[str, Cost]) -> Dict:
    t = totals(parts)
    return {
        "params": int(t["total"].params),
        "macs": int(t["total"].macs),
        "cnn_params": int(t["cnn"].params),
        "cnn_macs": int(t["cnn"].macs),
        "groups": {k: {"params": int(v.params), "macs": int(v.macs)} for k, v in group_breakdown(parts).items()},
    }


def summarize(result: ExportResult) -> Dict:
    """The pruning summary: model family, reference input length, ``round_to``, the per-layer sizes and costs
    (total, CNN, per group) ``before`` and ``after``, and with rounding the MACs without it (``unrounded_macs``)."""
    out = {
        "family": result.family,
        "reference_seconds": REFERENCE_SAMPLES / 16000,
        "round_to": result.round_to,
        "before": {**result.sizes_before.as_dict(), **_costs(result.before)},
        "after": {**result.sizes_after.as_dict(), **_costs(result.after)},
    }
    if result.unrounded is not None:
        out["unrounded_macs"] = int(float(totals(result.unrounded)["total"].macs))
    return out


#: how reports name a model family (``w2v_args.model._name``)
FAMILY_NAMES = {"wav2vec2": "wav2vec2", "hubert": "HuBERT"}


def format_cost(c: Cost) -> str:
    """``params`` in millions and ``macs`` in billions, fixed width."""
    return f"{float(c.params) / 1e6:8.3f}M {float(c.macs) / 1e9:8.3f}G"


def format_table(result: ExportResult) -> str:
    """Per-layer sizes and costs (params, GMACs at 10 s) before -> after, per component and in total."""
    s = result.summary
    b, a = s["before"], s["after"]
    family = FAMILY_NAMES.get(s.get("family", "wav2vec2"), s.get("family"))
    lines = [f"{family} encoder; parameters and GMACs for {s['reference_seconds']:.0f} s of audio",
             "conv layer  channels          params / GMACs before  ->  after"]
    for i, (cb, ca) in enumerate(zip(b["conv_channels"], a["conv_channels"])):
        costs = (format_cost(parts[f"conv.{i}"]) for parts in (result.before, result.after))
        lines.append(f"  {i:<9} {cb:>5} -> {ca:<5}  " + "  ->  ".join(costs))
    lines.append("layer  heads       FFN units        params / GMACs before  ->  after")
    per_layer = zip(b["attention_heads"], a["attention_heads"], b["ffn_units"], a["ffn_units"])
    for i, (hb, ha, ub, ua) in enumerate(per_layer):
        keys = [f"layers.{i}.{k}" for k in ("attention", "attention_products", "ffn", "norms")]
        cb = sum((result.before[k] for k in keys), Cost())
        ca = sum((result.after[k] for k in keys), Cost())
        lines.append(f"  {i:<4} {hb:>2} -> {ha:<3}  {ub:>5} -> {ua:<5}  {format_cost(cb)}  ->  {format_cost(ca)}")
    lines.append("component            params / GMACs before  ->  after")
    for name in b["groups"]:
        costs = (format_cost(Cost(g["groups"][name]["params"], g["groups"][name]["macs"])) for g in (b, a))
        lines.append(f"  {name:<18} " + "  ->  ".join(costs))
    tb, ta = totals(result.before)["total"], totals(result.after)["total"]
    lines.append(f"  {'total':<18} {format_cost(tb)}  ->  {format_cost(ta)}")
    ratios = float(ta.params) / float(tb.params), float(ta.macs) / float(tb.macs)
    lines.append(f"  ratio after/before: params {ratios[0]:.3f}, MACs {ratios[1]:.3f}")
    if "unrounded_macs" in s:
        extra = float(ta.macs) - s["unrounded_macs"]
        lines.append(
            f"  --round-to {s['round_to']}: {extra / 1e9:.3f} GMACs more than without rounding "
            f"({extra / s['unrounded_macs'] * 100:.1f}%)"
        )
    return "\n".join(lines)


def format_latency(latency: Dict) -> str:
    """The summary's ``latency`` (``fairseq-prune-export --latency-table``) on one or two lines: predicted, and
    measured where it was timed."""
    setting = (f"{latency['backend']}, {latency['threads']} thread(s), batch {latency['batch']}, "
               f"{float(latency['seconds']):g} s, table of {latency['device']}")
    lines = [f"  latency predicted: {latency['predicted_ms']:.1f} ms vs dense {latency['predicted_dense_ms']:.1f} ms "
             f"= {latency['predicted_latency_ratio']:.3f} of dense ({setting})"]
    if "measured_latency_ratio" in latency:
        lines.append(f"  latency measured:  {latency['ms']:.1f} ms vs dense {latency['dense_ms']:.1f} ms "
                     f"= {latency['measured_latency_ratio']:.3f} of dense (speed-up "
                     f"{latency['measured_speedup']:.2f}x, timed side by side here; the dense model at random "
                     "weights)")
    return "\n".join(lines)


def draw_architecture(summary: Dict, title: Optional[str] = None):
    """A figure with bars per layer: conv channels, attention heads and FFN units kept, over the sizes before
    export."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, a = summary["before"], summary["after"]
    panels = [("conv channels", "conv_channels", "CNN layer"),
              ("attention heads", "attention_heads", "Transformer layer"),
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
