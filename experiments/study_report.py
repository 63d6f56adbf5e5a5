"""The converged study's report: ``docs/results/study.md`` (every row with its 95% intervals and its paired
difference to the dense model) and the plots (test accuracy vs MAC ratio with intervals, dev learning curves)."""
import json
import os
from typing import Callable, Dict, List, Sequence

from . import bootstrap
from .report import pyplot
from .study_plan import LATENCY_TABLE, scored_metrics

#: a pruned row is compared with the small dense control when its MACs ratio is at most the control's plus this
#: (twice the criterion's default budget tolerance: a 0.5 target lands at 0.49-0.51)
CONTROL_MACS_SLACK = 0.02


def cells(r: Dict) -> str:
    """A row's scores in one line (the driver's log, commit messages, ``--list``)."""
    parts = [f"MACs {r['macs_ratio']:.2f}", f"WER {r['wer']:.1f}"]
    if r.get("intent_accuracy") is not None:
        parts += [f"intent {r['intent_accuracy']:.1f}", f"transcript WER {r['transcript_wer']:.1f}"]
    return ", ".join(parts + [f"{r['updates']} updates, {r['minutes']:.0f} min"])


def against_control(rows: List[Dict], counts: Callable[[str], tuple]) -> List[Dict]:
    """Each pruned row at most as costly as its corpus's small dense control (MACs ratio within
    :data:`CONTROL_MACS_SLACK` of it) against that control, paired on the same test utterances (``counts``: a row
    name's per-utterance counts): the question a user asks before pruning ("why not train a small model?").
    Negative WER / positive accuracy: pruning wins."""
    out = []
    for control in (r for r in rows if r["method"] == "small-dense"):
        reference = counts(control["name"])
        for r in rows:
            if (r["corpus"] != control["corpus"] or r["method"] in ("dense", "small-dense")
                    or r["macs_ratio"] > control["macs_ratio"] + CONTROL_MACS_SLACK):
                continue
            pruned = counts(r["name"])
            item = {"name": r["name"], "control": control["name"]}
            for m in scored_metrics(control["corpus"]):
                item[m], item[f"{m}_ci"] = bootstrap.paired_interval(pruned, reference, m)
            out.append(item)
    return out


def _ci(r: Dict, key: str, ci_key: str) -> str:
    if r.get(key) is None:
        return "–"
    low, high = r[ci_key]
    return f"{r[key]:.1f} [{low:.1f}, {high:.1f}]"


def _signed(value: float, ci) -> str:
    """A difference with its interval, signs shown: ``+0.4 [-0.3, +1.2]``."""
    return f"{value:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]"


def _diff(r: Dict, key: str) -> str:
    if r.get(f"{key}_vs_dense") is None:
        return "–"
    return _signed(r[f"{key}_vs_dense"], r[f"{key}_vs_dense_ci"])


def _speedup(r: Dict) -> str:
    """The speed-up over dense measured at export (both models side by side, the latency table's settings)."""
    latency = r.get("latency")
    return f"{latency['measured_speedup']:.2f}x" if latency and "measured_speedup" in latency else "–"


_METRIC_NAMES = {"wer": "WER", "intent_accuracy": "intent acc.", "transcript_wer": "transcript WER"}


def _latency(r: Dict) -> str:
    """The latency ratio to dense the committed table predicted for the exported model, and the one measured."""
    latency = r.get("latency")
    if not latency or "predicted_latency_ratio" not in latency:
        return "–"
    measured = latency.get("measured_latency_ratio")
    return f"{latency['predicted_latency_ratio']:.2f} / " + (f"{measured:.2f}" if measured is not None else "–")


def _label(r: Dict) -> str:
    target = "" if r["target"] is None else " " + "/".join(f"{t:g}" for t in r["target"])
    extra = "" if r["method"] in ("dense", "small-dense") else f", distill {r['distill']}, from {r['prune_from']}"
    tuned = ", fine-tuned after export" if r.get("finetuned_after_export") else ""
    return f"{r['method']}{target}{extra}{tuned}"


def study_markdown(rows: List[Dict], controls: Sequence[Dict] = ()) -> str:
    """One table per corpus; values are test-set numbers with 95% bootstrap intervals, differences are paired
    (same utterances) against the dense row of the same seed; ``controls``: pruned rows against the small dense
    control (:func:`against_control`)."""
    out = ["# The study at convergence: results", "",
           "Made by `python scripts/study.py --protocol converged` (each row's own command and commit are in "
           "study.json). Test sets: mini LibriSpeech test-clean 840 utterances, mini SLURP test 846 recordings, "
           "40 voices each. [low, high]: 95% bootstrap interval over utterances; vs dense: paired bootstrap "
           "interval of the difference to the dense model of the same seed. speed-up: dense time / this "
           "model's, both timed side by side at export (eager PyTorch, 1 thread, batch 1, 10 s; another run "
           "shared the machine). latency: the ratio to dense that the committed latency table "
           f"({LATENCY_TABLE}) predicts for the exported model / the ratio measured "
           "at export.", ""]
    for corpus in ("librispeech", "slurp"):
        these = [r for r in rows if r["corpus"] == corpus]
        if not these:
            continue
        out += [f"## {corpus}", ""]
        if corpus == "slurp":
            out += ["| row | seed | MACs | latency | speed-up | intent acc. | vs dense | transcript WER | vs dense "
                    "| updates | min |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            out += [f"| {_label(r)} | {r['seed']} | {r['macs_ratio']:.2f} | {_latency(r)} | {_speedup(r)} | "
                    f"{_ci(r, 'intent_accuracy', 'intent_ci')} | {_diff(r, 'intent_accuracy')} | "
                    f"{_ci(r, 'transcript_wer', 'transcript_wer_ci')} | {_diff(r, 'transcript_wer')} | "
                    f"{r['updates']} | {r['minutes']:.0f} |" for r in these]
        else:
            out += ["| row | seed | MACs | latency | speed-up | WER | vs dense | updates | min |",
                    "|---|---|---|---|---|---|---|---|---|"]
            out += [f"| {_label(r)} | {r['seed']} | {r['macs_ratio']:.2f} | {_latency(r)} | {_speedup(r)} | "
                    f"{_ci(r, 'wer', 'wer_ci')} | "
                    f"{_diff(r, 'wer')} | {r['updates']} | {r['minutes']:.0f} |" for r in these]
        out.append("")
        mine = [c for c in controls if c["name"] in {r["name"] for r in these}]
        if mine:
            metrics = ["wer"] if corpus == "librispeech" else ["intent_accuracy", "transcript_wer"]
            out += [f"Against the small dense control ({mine[0]['control']}, the same MACs; paired on the same "
                    "test utterances; WER below 0 or accuracy above 0: the pruned model is better):", "",
                    "| row | seed | " + " | ".join(f"{_METRIC_NAMES[m]} vs small-dense" for m in metrics) + " |",
                    "|---|---|" + "---|" * len(metrics)]
            by_name = {r["name"]: r for r in these}
            for c in mine:
                diffs = [_signed(c[m], c[f"{m}_ci"]) for m in metrics]
                out.append(f"| {_label(by_name[c['name']])} | {by_name[c['name']]['seed']} | " + " | ".join(diffs)
                           + " |")
            out.append("")
        for r in these:
            if r.get("dense_best_dev_by_then") is not None:
                out.append(f"- {r['name']}: best dev WER {r['best_dev']:.2f} after {r['updates']} updates from the "
                           f"self-supervised model; the dense run's best by the same updates: "
                           f"{r['dense_best_dev_by_then']:.2f}.")
        if out[-1] != "":
            out.append("")
    return "\n".join(out)


def plot_curves(curves_dir: str, names: List[str], path: str) -> None:
    """Dev WER (with the intent token for SLURP) against updates, one line per run, and the learning rate."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, corpus in zip(axes, ("librispeech", "slurp")):
        for name in names:
            if not name.startswith(corpus):
                continue
            with open(os.path.join(curves_dir, f"{name}.json")) as f:
                curve = json.load(f)
            ax.plot([p["update"] for p in curve], [p["wer"] for p in curve], marker=".", label=name)
        ax.set_title(f"mini {corpus}: dev WER")
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: the plotted test metrics: (corpus, row key, interval key, axis label); mini SLURP's intent accuracy is at its
#: ceiling for the dense model, so its transcript WER has a panel too
PANELS = (("librispeech", "wer", "wer_ci", "test WER"),
          ("slurp", "transcript_wer", "transcript_wer_ci", "test transcript WER"),
          ("slurp", "intent_accuracy", "intent_ci", "test intent accuracy"))


def plot_accuracy_vs_macs(rows: List[Dict], path: str) -> None:
    """Test accuracy (LibriSpeech WER, SLURP transcript WER and intent accuracy) against the exported models' MAC
    ratio, with the 95% intervals as error bars."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 4))
    for ax, (corpus, key, ci, label) in zip(axes, PANELS):
        for r in (r for r in rows if r["corpus"] == corpus):
            low, high = r[ci]
            ax.errorbar([r["macs_ratio"]], [r[key]], yerr=[[r[key] - low], [high - r[key]]], fmt="o", capsize=3,
                        label=f"{_label(r)} s{r['seed']}")
        ax.set_xlabel("MACs (ratio to dense, 10 s input)")
        ax.set_ylabel(label)
        ax.set_title(f"mini {corpus}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
