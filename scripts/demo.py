"""`make demo`: a mini HJ-Pruning study, end to end, on 2 CPU cores.

1. synthesise the mini LibriSpeech and mini SLURP corpora with espeak-ng and write their manifests with
   manifests/librispeech.py and manifests/slurp.py (the code a user runs on the real corpora);
2. start from the shipped mini wav2vec2 (assets/start_model, made by scripts/make_start_model.py);
3. fine-tune on each corpus with fairseq-hydra-train --user-dir fairseq_prune: the dense baseline
   (examples/mini/dense.yaml), then prune that dense model with HJ-Pruning-MAC at 50% of the MACs
   (examples/mini/hj_macs.yaml, model.w2v_path = the dense checkpoint_best.pt);
4. export the pruned models with fairseq-prune-export, then fine-tune each exported (compact) model a little
   longer without gates (the dense recipe, model.w2v_path = the exported model: updates at the compact model's
   cost); decode every test subset with fairseq-prune-infer, before and after that fine-tuning;
5. measure the CPU latency of each exported model against its dense baseline (10 s input, batch 1);
6. print one table and write it to results/demo.json and results/demo.md, with the pruned architectures
   (results/arch-*.png) and WER / intent accuracy vs GMACs (results/accuracy_vs_gmacs.png).

    python scripts/demo.py [--updates 800] [--finetune-updates 600] [--target 0.5]
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mini import (  # noqa: E402
    REPO, START_MODEL, SUBSETS, add_pruning_args, log, prepare_corpora, pruning_overrides, pyplot, row_cells,
    run_method, speedups, use_start_dictionary
)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "demo"))
    p.add_argument("--results", default=os.path.join(REPO, "results"))
    p.add_argument("--updates", type=int, default=800, help="fine-tuning updates per run")
    p.add_argument("--validations", type=int, default=2,
                   help="validations (and saved checkpoints) per run; checkpoint_best is the best within the budget")
    p.add_argument("--finetune-updates", type=int, default=600,
                   help="updates of fine-tuning the exported model without gates (0: none)")
    p.add_argument("--finetune-validations", type=int, default=2, help="validations of that fine-tuning run")
    add_pruning_args(p)
    p.add_argument("--target", type=float, default=0.5, help="HJ-Pruning-MAC target (share of the MACs)")
    p.add_argument("--lr", type=float, default=0.0003, help="peak learning rate of the model's weights")
    p.add_argument("--max-tokens", type=int, default=160000, help="audio samples per batch")
    p.add_argument("--no-parallel", dest="parallel", action="store_false",
                   help="train the corpora one after the other (default: side by side, one thread each)")
    p.add_argument("--corpora", nargs="+", default=["librispeech", "slurp"], choices=sorted(SUBSETS))
    return p


def table(rows: List[Dict]) -> str:
    head = "| corpus | method | params (M) | GMACs (10 s) | WER (test) | intent acc. (test) | CPU speed-up |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        speed = f"{r['speedup']:.2f}×" if "speedup" in r else "1.00× (reference)"
        lines.append(f"| {r['corpus']} | {r['method']} | {row_cells(r)} | {speed} |")
    return "\n".join(lines)


def plot(rows: List[Dict], path: str) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, corpus, key, label in ((axes[0], "librispeech", "wer", "WER (%), mini LibriSpeech test"),
                                   (axes[1], "slurp", "intent_accuracy", "intent accuracy (%), mini SLURP test")):
        for r in rows:
            if r["corpus"] == corpus and r.get(key) is not None:
                marker = "o" if r["method"] == "dense" else "s"
                ax.scatter(r["macs"] / 1e9, r[key], s=60, marker=marker, label=r["method"])
                ax.annotate(r["method"], (r["macs"] / 1e9, r[key]), textcoords="offset points", xytext=(6, 4))
        ax.set_xlabel("GMACs for 10 s of audio")
        ax.set_ylabel(label)
        ax.margins(x=0.25, y=0.12)  # room for the labels
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> List[Dict]:
    t0 = time.time()
    os.makedirs(args.results, exist_ok=True)
    if not os.path.exists(START_MODEL):
        raise SystemExit(f"{START_MODEL} is missing: regenerate it with python scripts/make_start_model.py")
    manifests = prepare_corpora(args.work)
    threads = 1 if args.parallel and len(args.corpora) > 1 else 0

    def corpus_runs(corpus: str) -> List[Dict]:
        use_start_dictionary(manifests[corpus])
        common = [f"dataset.max_tokens={args.max_tokens}"]
        dense = run_method(corpus, "dense", "dense", manifests[corpus], args.work, args.results, args.updates,
                           args.lr, *common, threads=threads, validations=args.validations)
        # prune the dense baseline itself: the user's case, a fine-tuned model that is too slow
        pruned = run_method(corpus, "hj_macs", "HJ-Pruning-MAC", manifests[corpus], args.work, args.results,
                            args.updates, args.lr, *common, f"criterion.target={args.target}",
                            *pruning_overrides(args), threads=threads,
                            validations=args.validations, start=dense["checkpoint"])
        if not args.finetune_updates:
            return [dense, pruned]
        # continue training the exported (compact) model without gates: cheaper updates, recovers accuracy
        tuned = run_method(corpus, "dense", "HJ-Pruning-MAC + fine-tuning", manifests[corpus], args.work,
                           args.results, args.finetune_updates, args.lr, *common, threads=threads,
                           validations=args.finetune_validations, start=pruned["checkpoint"])
        return [dense, pruned, tuned]

    if threads:
        log(f"training the {len(args.corpora)} corpora side by side, one thread each")
    with ThreadPoolExecutor(max_workers=len(args.corpora) if threads else 1) as pool:
        per_corpus = list(pool.map(corpus_runs, args.corpora))
    rows = []
    for corpus, (dense, *pruned) in zip(args.corpora, per_corpus):
        log(f"timing the exported {corpus} model(s) against the dense baseline (10 s input, batch 1, 1 thread)")
        for row, timing in zip(pruned, speedups(dense["checkpoint"], [r["checkpoint"] for r in pruned],
                                                manifests[corpus])):
            row.update(timing)
        rows += [dense, *pruned]
    md = table(rows)
    minutes = round((time.time() - t0) / 60, 1)
    print("\n" + md + f"\n\n(total {minutes} min)")
    with open(os.path.join(args.results, "demo.json"), "w") as f:
        json.dump({"rows": rows, "minutes": minutes, "args": vars(args)}, f, indent=1)
    with open(os.path.join(args.results, "demo.md"), "w") as f:
        f.write(md + f"\n\nWER: word error rate of the transcript (the intent token of SLURP labels not counted); "
                f"speed-up: median CPU latency of the dense model / the exported model, 10 s input, batch 1, "
                f"1 thread. Made by `make demo` in {minutes} min.\n")
    plot(rows, os.path.join(args.results, "accuracy_vs_gmacs.png"))
    log(f"done in {minutes} min: results/demo.md, results/demo.json, results/arch-*.png, "
        "results/accuracy_vs_gmacs.png")
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
