"""The study. `make study` runs --protocol converged: the committed study at convergence (experiments/study.py;
resumable across sessions, results in docs/results/study.json). The other protocols are the short sweep of
every method of the paper on the mini corpora at 2-3 targets each, i.e. the paper's accuracy-vs-computation
comparison at small scale (WER on mini LibriSpeech, intent accuracy on mini SLURP).

The same two protocols as `make demo`: --protocol finetuned (default) fine-tunes each corpus's dense baseline from
the shipped fine-tuned start model and every pruning method prunes while fine-tuning from the same start
(--prune-from dense: prunes the dense baseline instead); --protocol paper fine-tunes
the dense baseline from the self-supervised model (assets/pretrained) and every method prunes while fine-tuning
from it, same updates. Each pruned model is exported and decodes the test subset (experiments/runner.py). Writes
results/study.json, results/study.md and results/study_accuracy_vs_gmacs.png.

    python scripts/study.py [--corpora librispeech slurp] [--updates 800] [--jobs 2] [--only LABEL ...]
"""
import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

from experiments.common import REPO, log
from experiments.corpora import SUBSETS, match_start_dictionary, prepare_corpora
from experiments.processes import in_threads, stopping_children
from experiments.protocols import PROTOCOLS, add_pruning_args, presets, pruning_overrides, resolve_protocol
from experiments.report import plot_accuracy_vs_gmacs, study_table
from experiments.runner import run_method

# (label, recipe, criterion overrides): the paper's methods and baselines at 2-3 targets each
RUNS = [
    ("dense", "dense", []),
    ("HJ-Size 0.7", "hj_size", ["criterion.target=0.7"]),
    ("HJ-Size 0.5", "hj_size", ["criterion.target=0.5"]),
    ("HJ-SepSize 0.5/0.7", "hj_sep_size", ["criterion.target_cnn=0.5", "criterion.target_transformer=0.7"]),
    ("HJ-SepSize 0.3/0.5", "hj_sep_size", ["criterion.target_cnn=0.3", "criterion.target_transformer=0.5"]),
    ("HJ-MAC 0.7", "hj_macs", ["criterion.target=0.7"]),
    ("HJ-MAC 0.5", "hj_macs", ["criterion.target=0.5"]),
    ("HJ-MAC 0.35", "hj_macs", ["criterion.target=0.35"]),
    ("CNN-only 0.97", "cnn_only", ["criterion.target=0.97"]),
    ("CNN-only 0.95", "cnn_only", ["criterion.target=0.95"]),
    ("CNN-only MAC 0.8", "cnn_only", ["criterion.budget=macs", "criterion.target=0.8"]),  # a size budget barely
    # moves the CNN's gates (its channels hold few parameters): see docs/study-former-start-model.md
    ("Transformer-only 0.7", "transformer_only", ["criterion.target=0.7"]),
    ("Transformer-only 0.5", "transformer_only", ["criterion.target=0.5"]),
]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "study"))
    p.add_argument("--corpora-work", default=os.path.join(REPO, "work", "demo"), help="corpora shared with the demo")
    p.add_argument("--results", default=os.path.join(REPO, "results"))
    p.add_argument("--corpora", nargs="+", default=["librispeech", "slurp"], choices=sorted(SUBSETS))
    p.add_argument("--protocol", choices=sorted(PROTOCOLS) + ["converged"], default="finetuned",
                   help="finetuned: prune while fine-tuning the fine-tuned start model; paper: prune while "
                        "fine-tuning from the self-supervised model; converged: the committed study at "
                        "convergence (resumable; experiments/study_plan.py, README 'The study at convergence')")
    p.add_argument("--commit", action="store_true",
                   help="converged: git-commit each row's files (and the dense models) as soon as it ends")
    p.add_argument("--start-within", type=float, default=None,
                   help="converged: start no new run after this many minutes (let a session's last runs finish)")
    p.add_argument("--list", action="store_true", help="converged: print the rows, done or pending, and exit")
    p.add_argument("--start", help="the model the dense runs start from (default: the protocol's)")
    p.add_argument("--prune-from", choices=("start", "dense"),
                   help=f"start: prune while fine-tuning from --start; dense: prune the fine-tuned dense baseline "
                        f"({presets('prune_from')})")
    p.add_argument("--updates", type=int, help=f"updates per run ({presets('updates')})")
    p.add_argument("--validations", type=int, default=4, help="validations (and saved checkpoints) per run")
    add_pruning_args(p)
    p.add_argument("--lr", type=float, help=f"peak learning rate of the model's weights ({presets('lr')})")
    p.add_argument("--max-tokens", type=int, default=160000)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each (1: one at a time)")
    p.add_argument("--only", nargs="*", help="run only these labels (e.g. 'dense' 'HJ-MAC 0.5')")
    return p


def converged(args: argparse.Namespace) -> List[Dict]:
    """--protocol converged: the resumable study (experiments/study.py)."""
    from experiments.study import Study, listing, run_study

    work = os.path.abspath(args.work)
    manifests = prepare_corpora(args.corpora_work) if not args.list else {}
    study = Study(work, manifests, commit=args.commit)
    if args.list:
        print("\n".join(listing(study, args.only)))
        return list(study.done.values())
    return run_study(study, jobs=args.jobs, only=args.only, start_within=args.start_within)


def main(args: argparse.Namespace) -> List[Dict]:
    if args.protocol == "converged":
        return converged(args)
    t0 = time.time()
    args = resolve_protocol(args)
    if not os.path.exists(args.start):
        raise SystemExit(f"{args.start} is missing: make it with python scripts/make_pretrained_model.py "
                         "(assets/pretrained) or scripts/make_start_model.py (assets/start_model)")
    os.makedirs(args.results, exist_ok=True)
    manifests = prepare_corpora(args.corpora_work)
    match_start_dictionary(manifests, args.start)
    jobs = []
    for corpus in args.corpora:
        for label, recipe, overrides in RUNS:
            if args.only and label not in args.only:
                continue
            extra = [f"dataset.max_tokens={args.max_tokens}"] + list(overrides)
            if recipe != "dense":
                extra += pruning_overrides(args)
            jobs.append((corpus, recipe, label, manifests[corpus], extra))
    threads = 1 if args.jobs > 1 else 0
    log(f"{len(jobs)} runs, {args.jobs} at a time" + (", one thread each" if threads else ""))

    def one(job) -> Dict:
        corpus, recipe, label, manifest, extra, start = job
        return run_method(corpus, recipe, label, manifest, args.work, args.results, args.updates, args.lr, *extra,
                          threads=threads, validations=args.validations, start=start)

    def prune_start(corpus: str, rows: List[Dict]) -> str:
        if args.prune_from == "start":
            return args.start
        done = [r["checkpoint"] for r in rows if r["corpus"] == corpus and r["recipe"] == "dense"]
        path = done[0] if done else os.path.join(args.work, "runs", f"{corpus}-dense", "checkpoint_best.pt")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: the pruning runs start from the dense baseline; include 'dense'")
        return path

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # the dense baselines first (with --prune-from dense, the pruning runs prune them)
        rows = in_threads(pool, one, [(*job, args.start) for job in jobs if job[1] == "dense"])
        pruning = [(*job, prune_start(job[0], rows)) for job in jobs if job[1] != "dense"]
        rows += in_threads(pool, one, pruning)
    minutes = round((time.time() - t0) / 60, 1)
    md = study_table(rows)
    print("\n" + md + f"\n\n(total {minutes} min)")
    with open(os.path.join(args.results, "study.json"), "w") as f:
        json.dump({"rows": rows, "minutes": minutes, "args": vars(args)}, f, indent=1)
    with open(os.path.join(args.results, "study.md"), "w") as f:
        f.write(md + f"\n\nMade by `python scripts/study.py` in {minutes} min ({args.updates} updates per run).\n")
    plot_accuracy_vs_gmacs(rows, os.path.join(args.results, "study_accuracy_vs_gmacs.png"), by_target=True)
    return rows


if __name__ == "__main__":
    with stopping_children("study"):
        main(get_parser().parse_args())
