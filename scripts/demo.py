"""`make demo`: HJ-Pruning in miniature, end to end, on 2 CPU cores, with one of three protocols.

--protocol study (the default; experiments/demo_study.py): a small part of the committed study at convergence
(docs/results/study.json), run again here: decode the study's shipped dense model of each corpus
(assets/study/CORPUS_dense_s1.pt), prune it with HJ-Pruning-MAC (--target, default 0.5 of the MACs) and the study's
layer-wise distillation from it for the updates that fit (--updates, default 800), export, decode, time; print each
row beside the study row it corresponds to. A corpus whose dense study rows have not finished is left out.

--protocol finetuned (the user who has a fine-tuned model that is too slow): start from the shipped
mini wav2vec2 that was pre-trained self-supervised and then fine-tuned with CTC on both corpora
(assets/start_model, scripts/make_start_model.py); on each corpus and for each seed, fine-tune the dense baseline
and, from the same start for the same updates, prune while fine-tuning with HJ-Pruning-MAC at two MAC targets;
export. Options: fine-tuning the exported models without gates (--finetune-updates N, rows of their own),
pruning each seed's dense baseline (--prune-from dense), distilling from the start model (--distill W).

--protocol paper (the paper's): start from the shipped *self-supervised* mini wav2vec2 (assets/pretrained, made by
scripts/make_pretrained_model.py with fairseq's own audio_pretraining task, wav2vec2 model and wav2vec criterion on
an unlabeled corpus); on each corpus and for each seed, fine-tune the dense baseline and, from the same pre-trained
model for the same number of updates, prune while fine-tuning with HJ-Pruning-MAC. Far longer than 20 minutes on
2 CPU cores at the updates it needs (see docs/protocols.md).

Either way: synthesise the mini LibriSpeech and mini SLURP corpora with espeak-ng and write their manifests with
manifests/librispeech.py and manifests/slurp.py (the code a user runs on the real corpora); train with
fairseq-hydra-train --user-dir fairseq_prune (examples/mini recipes), runs side by side; export with
fairseq-prune-export, decode the test subsets with fairseq-prune-infer; time each exported model against its
dense baseline (10 s input, batch 1); print one table (the mean over the seeds and each seed's value) and write
results/demo.json, results/demo.md, results/arch-*.png and results/accuracy_vs_gmacs.png.

Every preset value can be overridden (--start, --prune-from, --updates, --lr, --target, --finetune-updates,
--seeds, --distill). --distill W: each pruning run also distils from a dense model fine-tuned with CTC: the start
model when it is one (finetuned), else its seed's dense baseline (paper). --random-init: dense rows
fine-tuned from a randomly initialised model of the start model's shape (what pre-training is worth).

    python scripts/demo.py [--protocol finetuned|paper] [--seeds 1 2] [--updates N] [--distill 0.5]
"""
import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

from experiments.checkpoints import is_finetuned, random_init_model
from experiments.common import REPO, log
from experiments.corpora import SUBSETS, match_start_dictionary, prepare_corpora
from experiments.processes import in_threads, stopping_children
from experiments.protocols import PROTOCOLS, add_pruning_args, presets, pruning_overrides, resolve_protocol
from experiments.report import demo_table, plot_accuracy_vs_gmacs, summarise_seeds
from experiments.runner import run_method
from experiments.timing import time_against_dense

TUNED = " + fine-tuning"
RANDOM = "dense from random init"


def pruned_label(target: float) -> str:
    """The table's name of the HJ-Pruning-MAC rows of one target."""
    return f"HJ-Pruning-MAC {target:g}"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "demo"))
    p.add_argument("--results", default=os.path.join(REPO, "results"))
    p.add_argument("--corpora-work", default=None, help="where the synthetic corpora live (default: --work)")
    p.add_argument("--protocol", choices=["study", *sorted(PROTOCOLS)], default="study",
                   help="study: a small part of the committed study, beside its rows; finetuned: prune while "
                        "fine-tuning a fine-tuned model; paper: prune while fine-tuning from the self-supervised "
                        "model (see the module docstring)")
    p.add_argument("--start", help="the model every run starts from (default: the protocol's)")
    p.add_argument("--updates", type=int, help=f"fine-tuning updates per run, dense and pruning ({presets('updates')})")
    p.add_argument("--seeds", type=int, nargs="+", help=f"one run of every row per seed ({presets('seeds')})")
    p.add_argument("--validations", type=int, default=2,
                   help="validations (and saved checkpoints) per run; checkpoint_best is the best within the budget")
    p.add_argument("--prune-from", choices=("start", "dense"),
                   help=f"start: prune while fine-tuning from --start; dense: prune each seed's fine-tuned dense "
                        f"baseline ({presets('prune_from')})")
    p.add_argument("--finetune-updates", type=int,
                   help="updates of fine-tuning the exported model without gates, reported in rows of their own "
                        f"(0: none; {presets('finetune_updates')})")
    p.add_argument("--distill", type=float,
                   help="distillation weight: each pruning run also learns from the start model if it is fine-tuned "
                        "with CTC, else from its seed's dense baseline (criterion.distill_teacher / distill_weight; "
                        f"the pruning runs then start after the dense ones); 0: none ({presets('distill')})")
    p.add_argument("--random-init", action="store_true",
                   help="add dense rows fine-tuned from a randomly initialised model of the same shape")
    add_pruning_args(p)
    p.add_argument("--target", type=float, nargs="+",
                   help=f"HJ-Pruning-MAC targets, shares of the MACs, one row each ({presets('target')})")
    p.add_argument("--lr", type=float, help=f"peak learning rate of the model's weights ({presets('lr')})")
    p.add_argument("--max-tokens", type=int, default=160000, help="audio samples per batch")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each (1: one at a time)")
    p.add_argument("--corpora", nargs="+", default=["librispeech", "slurp"], choices=sorted(SUBSETS))
    return p


def runs(args, manifests: Dict[str, str], threads: int) -> List[Dict]:
    """Every run of the demo, as many side by side as ``--jobs`` allows: first those that start from the
    start model alone (dense, the random-init rows, HJ-Pruning-MAC unless it needs its dense baseline), then
    the pruning runs that do (--prune-from dense, --distill from the dense baseline), then fine-tuning the
    exported models."""
    def run(job) -> Dict:
        corpus, seed, method, label, updates, start, extra = job
        return run_method(corpus, method, label, manifests[corpus], args.work, args.results, updates, args.lr,
                          f"dataset.max_tokens={args.max_tokens}", *extra, start=start, threads=threads,
                          validations=args.validations, seed=seed)

    teacher_is_start = is_finetuned(args.start)

    def prune(corpus: str, seed: int, dense: str = None) -> List[tuple]:
        jobs = []
        for target in args.target:
            extra = [f"criterion.target={target}", *pruning_overrides(args)]
            if args.distill:
                teacher = os.path.abspath(args.start) if teacher_is_start else dense
                extra += [f"criterion.distill_teacher={teacher}", f"criterion.distill_weight={args.distill}"]
            start = dense if args.prune_from == "dense" else args.start
            jobs.append((corpus, seed, "hj_macs", pruned_label(target), args.updates, start, extra))
        return jobs

    needs_dense = args.prune_from == "dense" or (args.distill > 0 and not teacher_is_start)
    first = []
    for seed in args.seeds:
        for corpus in args.corpora:
            first.append((corpus, seed, "dense", "dense", args.updates, args.start, []))
            if not needs_dense:
                first += prune(corpus, seed)
            if args.random_init:
                first.append((corpus, seed, "dense", RANDOM, args.updates, random_init_model(args.start, args.work),
                              []))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = in_threads(pool, run, first)
        if needs_dense:
            dense = [r for r in rows if r["method"] == "dense"]
            rows += in_threads(pool, run,
                               [job for r in dense for job in prune(r["corpus"], r["seed"], r["checkpoint"])])
        if args.finetune_updates:  # the compact model without gates: cheaper updates, may recover accuracy
            pruned = [r for r in rows if r["recipe"] == "hj_macs"]
            rows += in_threads(pool, run, [(r["corpus"], r["seed"], "dense", r["method"] + TUNED,
                                            args.finetune_updates, r["checkpoint"], []) for r in pruned])
    return rows


def study_demo(args: argparse.Namespace, t0: float) -> List[Dict]:
    """--protocol study (experiments/demo_study.py): the study's shipped dense models, pruned here for minutes,
    each row printed beside the committed study row it corresponds to."""
    from experiments import demo_study

    demo_study.resolve(args)
    os.makedirs(args.results, exist_ok=True)
    manifests = prepare_corpora(args.corpora_work or args.work)
    references = demo_study.shipped_references(args.corpora)
    if not references:
        raise SystemExit("no corpus has a shipped study model (assets/study/CORPUS_dense_s1.pt): run the study's "
                         "dense rows first (python scripts/study.py --protocol converged), or another --protocol")
    log(f"corpora {sorted(references)}: the study's dense models pruned at {args.target} for {args.updates} updates, "
        f"{args.jobs} runs at a time")
    rows = demo_study.runs(args, manifests, references)
    time_against_dense(rows, manifests)
    table = demo_study.comparison_table(rows, demo_study.read_study_rows(), args.target)
    write_results(args, t0, table, {"rows": rows}, lambda minutes: (
        f"Here: this machine, `make demo` (protocol study) in {minutes} min: the study's shipped dense model of each "
        f"corpus decoded, and pruned from it with layer-wise distillation for {args.updates} updates. Study: the "
        f"committed rows of docs/results/study.json (95% bootstrap intervals over the test utterances). WER: of the "
        f"transcript (SLURP's intent token not counted); speed-up: median CPU latency of the dense model / the "
        f"exported model, 10 s input, batch 1, 1 thread."))
    return rows


def write_results(args: argparse.Namespace, t0: float, table: str, data: Dict, note) -> float:
    """Print ``table`` with the minutes since ``t0``, and write results/demo.json (``data``, the minutes and the
    arguments) and results/demo.md (``table`` and ``note(minutes)``); returns the minutes."""
    minutes = round((time.time() - t0) / 60, 1)
    print("\n" + table + f"\n\n(total {minutes} min)")
    texts = {"demo.json": json.dumps({**data, "minutes": minutes, "args": vars(args)}, indent=1),
             "demo.md": table + "\n\n" + note(minutes) + "\n"}
    for name, text in texts.items():  # each complete or not there
        path = os.path.join(args.results, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    plot = os.path.join(args.results, "accuracy_vs_gmacs.png")
    log(f"done in {minutes} min: results/demo.md, results/demo.json, results/arch-*.png"
        + (", results/accuracy_vs_gmacs.png" if os.path.exists(plot) and os.path.getmtime(plot) >= t0 else ""))
    return minutes


def main(args: argparse.Namespace) -> List[Dict]:
    t0 = time.time()
    if args.protocol == "study":
        return study_demo(args, t0)
    args = resolve_protocol(args)
    os.makedirs(args.results, exist_ok=True)
    if not os.path.exists(args.start):
        raise SystemExit(f"{args.start} is missing: make it with python scripts/make_pretrained_model.py "
                         "(assets/pretrained) or scripts/make_start_model.py (assets/start_model)")
    manifests = prepare_corpora(args.corpora_work or args.work)
    match_start_dictionary(manifests, args.start)
    threads = 1 if args.jobs > 1 else 0
    log(f"seeds {args.seeds}, corpora {args.corpora}: {args.jobs} runs at a time"
        + (", one thread each" if threads else ""))
    rows = runs(args, manifests, threads)
    time_against_dense(rows, manifests)
    summary = summarise_seeds(rows)
    plot_accuracy_vs_gmacs(summary, os.path.join(args.results, "accuracy_vs_gmacs.png"))
    write_results(args, t0, demo_table(summary), {"summary": summary, "rows": rows}, lambda minutes: (
        f"Mean over seeds {args.seeds} (each seed's value in brackets). WER: word error rate of the transcript (the "
        f"intent token of SLURP labels not counted); speed-up: median CPU latency of the dense model / the exported "
        f"model, 10 s input, batch 1, 1 thread. Made by `make demo` in {minutes} min (protocol {args.protocol}: "
        f"{args.updates} updates per run, pruning from the {args.prune_from} model"
        + (f", distillation weight {args.distill}" if args.distill else "") + ")."))
    return rows


if __name__ == "__main__":
    with stopping_children("demo"):
        main(get_parser().parse_args())
