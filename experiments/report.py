"""Result tables and the accuracy-vs-computation plot of the demo and the study."""
import os
import statistics
from typing import Dict, List

from .common import REPO

#: the scores that :func:`summarise_seeds` averages over the seeds
SCORES = ("params", "macs", "wer", "transcript_wer", "intent_accuracy", "speedup", "macs_ratio")


def pyplot():
    """matplotlib's pyplot on the Agg backend, its loggers quiet (importing fairseq can leave the root logger at
    DEBUG, which would print every font matplotlib looks at)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def word_error_key(r: Dict) -> str:
    """The WER a row reports: that of the transcript when there is one (SLURP: the intent token is not a word)."""
    return "transcript_wer" if r.get("transcript_wer") is not None else "wer"


def row_cells(r: dict) -> str:
    """``params (M) | GMACs | WER | intent accuracy`` of a result row (WER of the transcript: SLURP's intent token
    is not counted as a word)."""
    wer = r[word_error_key(r)]
    intent = f"{r['intent_accuracy']:.1f}" if r.get("intent_accuracy") is not None else "–"
    return f"{r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | {wer:.1f} | {intent}"


def study_table(rows: List[Dict]) -> str:
    """One line per run: corpus, method, params, GMACs, WER, intent accuracy."""
    lines = ["| corpus | method | params (M) | GMACs (10 s) | WER (test) | intent acc. (test) |", "|" + "---|" * 6]
    lines += [f"| {r['corpus']} | {r['method']} | {row_cells(r)} |" for r in rows]
    return "\n".join(lines)


def summarise_seeds(rows: List[Dict]) -> List[Dict]:
    """One row per corpus and method: the mean over the seeds of every score, with each seed's value."""
    out: Dict[tuple, Dict] = {}
    for r in rows:
        out.setdefault((r["corpus"], r["method"]), {"corpus": r["corpus"], "method": r["method"], "runs": []})
        out[(r["corpus"], r["method"])]["runs"].append(r)
    for s in out.values():
        for key in SCORES:
            values = [r[key] for r in s["runs"] if r.get(key) is not None]
            if values:
                s[key] = statistics.mean(values)
                s[key + "_per_seed"] = values
        s["seeds"] = [r["seed"] for r in s["runs"]]
        s["runs"] = [os.path.relpath(r["checkpoint"], REPO) for r in s["runs"]]
    return list(out.values())


def seeds_cell(s: Dict, key: str, fmt: str = "{:.1f}") -> str:
    """The mean of a summary row's score, each seed's value in brackets when there are several."""
    if s.get(key) is None:
        return "–"
    seeds = " / ".join(fmt.format(v) for v in s[key + "_per_seed"])
    return fmt.format(s[key]) + (f" ({seeds})" if len(s[key + "_per_seed"]) > 1 else "")


def demo_table(summary: List[Dict]) -> str:
    """The demo's table of :func:`summarise_seeds` rows, with MACs and CPU speed-up against the dense model."""
    head = ("| corpus | method | params (M) | GMACs (10 s) | MACs vs dense | WER (test) | intent acc. (test) "
            "| CPU speed-up |")
    lines = [head, "|" + "---|" * 8]
    for s in summary:
        speed = seeds_cell(s, "speedup", "{:.2f}×") if s.get("speedup") else "1.00× (reference)"
        lines.append(f"| {s['corpus']} | {s['method']} | {s['params'] / 1e6:.2f} | {s['macs'] / 1e9:.2f} | "
                     f"{s['macs_ratio']:.2f} | {seeds_cell(s, word_error_key(s))} | "
                     f"{seeds_cell(s, 'intent_accuracy')} | {speed} |")
    return "\n".join(lines)


def _metric(corpus: str) -> tuple:
    """(score, axis label) of a corpus: WER on LibriSpeech, intent accuracy on SLURP."""
    return ("wer", "WER (%)") if corpus == "librispeech" else ("intent_accuracy", "intent accuracy (%)")


def _family(method: str, by_target: bool) -> str:
    """What joins points with a line: with ``by_target``, a method's label without its target ("HJ-MAC 0.5" ->
    "HJ-MAC"); else each method stands alone."""
    return method.rsplit(" ", 1)[0] if by_target and method != "dense" else method


def _draw_corpus(ax, rows: List[Dict], corpus: str, by_target: bool) -> None:
    key, label = _metric(corpus)
    families: Dict[str, list] = {}
    for r in rows:
        value_key = word_error_key(r) if key == "wer" else key
        if r["corpus"] == corpus and r.get(value_key) is not None:
            families.setdefault(_family(r["method"], by_target), []).append(
                (r["macs"] / 1e9, r[value_key], r.get(value_key + "_per_seed", []), r["method"]))
    for family, points in families.items():
        points.sort(key=lambda p: p[0])
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if family == "dense" else "s",
                        linestyle="-" if by_target else "none", label=family)
        for x, y, per_seed, method in points:
            if len(per_seed) > 1:
                ax.scatter([x] * len(per_seed), per_seed, s=18, alpha=0.5, color=line.get_color())
            if not by_target:
                ax.annotate(method, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_title(f"mini {corpus} (test): {label} vs computation")
    seeds = any(len(p[2]) > 1 for points in families.values() for p in points)
    ax.set_xlabel("GMACs for 10 s of audio" + (" (small markers: each seed; large: their mean)" if seeds else ""))
    ax.set_ylabel(label)
    ax.margins(x=0.25 if not by_target else 0.05, y=0.12)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_accuracy_vs_gmacs(rows: List[Dict], path: str, by_target: bool = False) -> None:
    """Accuracy against GMACs at 10 s, one panel per corpus (WER on LibriSpeech, intent accuracy on SLURP), from
    result rows or :func:`summarise_seeds` rows (each seed's value drawn small beside the mean). ``by_target``:
    the targets of a method are joined by a line (the study); else every method is a labelled point (the demo)."""
    plt = pyplot()
    corpora = sorted({r["corpus"] for r in rows})
    fig, axes = plt.subplots(1, len(corpora), figsize=(6.5 * len(corpora), 4.5), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        _draw_corpus(ax, rows, corpus, by_target)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
