"""`make demo`'s protocol ``study``: a small part of the committed study (docs/results/study.json), run again on
this machine in minutes, each of its rows printed beside the study row it corresponds to.

For each corpus whose converged dense reference the study has shipped (``assets/study/CORPUS_dense_s1.pt``):

* the shipped dense model decodes the test set: the study's dense row, reproduced (the same numbers, or the
  machine differs from the study's in a way that matters);
* HJ-Pruning-MAC prunes it at each target (default 0.5 of the MACs) with the study's layer-wise distillation
  from the same model as teacher (CoFiPruning's way: the converged model is both start and teacher), for the
  updates that fit in the demo rather than the study's tens of thousands; then export and decode;
* the exported models are timed against the shipped dense one (10 s input, batch 1, 1 thread).

A corpus without a shipped reference is named and left out: its dense study rows have not finished yet.
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from .common import log
from .processes import in_threads
from .protocols import pruning_overrides
from .report import word_error_key
from .runner import run_method, score_model
from .study import ASSETS, RESULTS
from .study_files import RowFiles
from .study_plan import LR_FROM_DENSE, Row, distill_overrides

#: the dense row's name in the demo's table
DENSE = "dense"
#: what the protocol fills in when the command line leaves it out: updates that fit in the demo's minutes, the
#: study's learning rate for pruning a converged model, the target warmed up over the first third as in the study
PRESETS = dict(updates=800, lr=LR_FROM_DENSE, target=[0.5], warmup=270)
#: scripts/demo.py options of the other protocols that this one does not take (start, teacher, seed and
#: distillation are the study's)
NOT_TAKEN = ("start", "prune_from", "finetune_updates", "distill", "random_init", "seeds")


def resolve(args) -> None:
    """Fill ``args`` from :data:`PRESETS`; one line naming the options this protocol does not take."""
    given = [o for o in NOT_TAKEN if getattr(args, o) not in (None, False)]
    if given:
        raise SystemExit("--protocol study does not take " + ", ".join("--" + o.replace("_", "-") for o in given)
                         + ": it starts from, and distils from, the study's shipped dense model (seed 1)")
    for key, value in PRESETS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def shipped_references(corpora: List[str], assets: str = ASSETS) -> Dict[str, str]:
    """corpus -> the study's shipped dense model (seed 1) for the corpora that have one; the others are logged."""
    out = {}
    for corpus in corpora:
        path = RowFiles(RESULTS, assets, Row(corpus, "dense", 1).name).model  # where the study ships it
        if os.path.exists(path):
            out[corpus] = path
        else:
            log(f"{corpus}: left out, the study has not shipped its converged dense model yet ({path})")
    return out


def pruned_label(target: float) -> str:
    return f"HJ-Pruning-MAC {target:g} distill-layers"  # a folder name too: no comma (hydra reads it as a list)


def runs(args, manifests: Dict[str, str], references: Dict[str, str]) -> List[Dict]:
    """The demo's rows: per corpus, the shipped dense model decoded and each target pruned from it (runs side by
    side, ``args.jobs`` at a time, one thread each when more than one runs)."""
    jobs = [(corpus, target) for corpus in references for target in args.target]
    jobs += [(corpus, None) for corpus in references]  # decoding the shipped model: short, after the training
    threads = 1 if args.jobs > 1 and len(jobs) > 1 else 0

    def run(job) -> Dict:
        corpus, target = job
        model = references[corpus]
        if target is None:
            return score_model(corpus, DENSE, model, manifests[corpus], args.work, seed=1)
        extra = [f"dataset.max_tokens={args.max_tokens}", f"criterion.target={target}", *pruning_overrides(args),
                 *distill_overrides("layers", os.path.abspath(model))]
        return run_method(corpus, "hj_macs", pruned_label(target), manifests[corpus], args.work, args.results,
                          args.updates, args.lr, *extra, start=model, threads=threads,
                          validations=args.validations, seed=1)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = in_threads(pool, run, jobs)
    return sorted(rows, key=lambda r: (list(references).index(r["corpus"]), r["method"] != DENSE))  # dense first


def study_row(corpus: str, target: Optional[float], rows: List[Dict]) -> Optional[Dict]:
    """The committed study row a demo row corresponds to: the dense seed-1 row, or HJ-Pruning-MAC at ``target``
    with layer-wise distillation, seed 1, pruned from the dense model if the study has that row, else from the
    self-supervised one."""
    if target is None:
        return next((r for r in rows if r["name"] == Row(corpus, "dense", 1).name), None)
    found = {r.get("prune_from"): r for r in rows
             if r["corpus"] == corpus and r["method"] == "HJ-Pruning-MAC" and r["target"] == [target]
             and r["distill"] == "layers" and r["seed"] == 1}
    return found.get("dense") or found.get("ssl")


def read_study_rows(results: str = RESULTS) -> List[Dict]:
    path = os.path.join(results, "study.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["rows"]


def _interval(r: Dict, key: str) -> str:
    ci = r.get(key.replace("_accuracy", "") + "_ci")
    return f"{r[key]:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else f"{r[key]:.1f}"


def comparison_table(rows: List[Dict], study_rows: List[Dict], targets: List[float]) -> str:
    """This machine's rows beside the study's: MACs vs dense, WER (SLURP: of the transcript), intent accuracy,
    updates; the study's scores with their 95% intervals."""
    head = ("| corpus | row | here: MACs vs dense | here: WER | here: intent acc. | here: speed-up | here: updates "
            "| study: MACs vs dense | study: WER [95%] | study: intent acc. [95%] | study: updates |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        target = next((t for t in targets if r["method"] == pruned_label(t)), None)
        key = word_error_key(r)
        intent = f"{r['intent_accuracy']:.1f}" if r.get("intent_accuracy") is not None else "–"
        speed = f"{r['speedup']:.2f}×" if r.get("speedup") else "1.00× (reference)"
        updates = str(r["updates"]) if r.get("updates") else "0 (shipped)"
        here = f"| {r['corpus']} | {r['method']} | {r['macs_ratio']:.2f} | {r[key]:.1f} | {intent} | {speed} | {updates}"
        s = study_row(r["corpus"], target, study_rows)
        if s is None:
            lines.append(here + " | not in the study yet | | | |")
            continue
        s_intent = _interval(s, "intent_accuracy") if s.get("intent_accuracy") is not None else "–"
        origin = "" if target is None else f" (from {s['prune_from']})"
        lines.append(here + f" | {s['macs_ratio']:.2f}{origin} | {_interval(s, key)} | {s_intent} | {s['updates']} |")
    return "\n".join(lines)
