"""Make the self-supervised mini wav2vec2, ``assets/pretrained/wav2vec2_mini.pt``, the way wav2vec2 is made.

1. synthesise an unlabeled corpus with espeak-ng (``manifests/unlabeled.py``): speakers and sentences disjoint
   from every dev and test subset of the labeled mini corpora;
2. pre-train with fairseq's own ``audio_pretraining`` task, ``wav2vec2`` model and ``wav2vec`` criterion
   (contrastive + diversity loss over quantised targets), recipe ``examples/mini/pretraining.yaml``, with
   ``fairseq-hydra-train`` (no plugin code);
3. keep the last checkpoint's weights in float16 without optimizer state (a normal fairseq ``wav2vec2``
   pre-training checkpoint, which ``model.w2v_path`` accepts) with its provenance under the key
   ``pretrained_model`` (and in a ``.json`` file beside it): updates, minutes, the last training and validation
   records (loss, contrastive accuracy, code perplexity), the corpus; the shape is the checkpoint's ``cfg.model``.

Resumable: a run that is stopped (Ctrl-C, kill, end of a session) continues from WORK/train/checkpoint_last.pt
when started again with the same options (fairseq restores the optimizer, schedule and data order); --updates may
be raised to train longer. Deterministic for a seed (on the same machine and thread count).

    python scripts/make_pretrained_model.py [--updates 20000] [--threads 1] [--work work/pretrain]
"""
import argparse
import json
import os
import shutil
import subprocess
import time
from typing import List

from experiments.checkpoints import ship_checkpoint
from experiments.common import MINI_W2V, PRETRAINED_MODEL, PY, REPO, SHAPES, command_env, log
from experiments.corpora import prepare_unlabeled_corpus
from experiments.fairseq_log import last_records
from experiments.processes import run as run_child, stopping_children


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "pretrain"), help="scratch folder")
    p.add_argument("--updates", type=int, default=20000, help="pre-training updates in all (default 20000)")
    p.add_argument("--utts", type=int, default=20000, help="unlabeled training utterances (default 20000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the training process (0: default)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming WORK/train")
    p.add_argument("--shape", choices=sorted(SHAPES), default="mini",
                   help="mini: the shipped model (the recipe's shape); small: the study's small dense control, "
                        "half the MACs (experiments/common.py)")
    p.add_argument("--corpus-work", help="folder whose corpus/ holds the unlabeled corpus (default: --work); "
                                         "two shapes pre-trained on one corpus share it")
    p.add_argument("--out", help="the shipped checkpoint (default: assets/pretrained/wav2vec2_SHAPE.pt)")
    return p


def shape_overrides(shape: str) -> List[str]:
    """fairseq-hydra-train overrides of the recipe's model shape (none for the recipe's own, mini)."""
    fields = SHAPES[shape]
    return [] if fields == MINI_W2V else [f"model.{k}='{v}'" if isinstance(v, str) else f"model.{k}={v}"
                                          for k, v in fields.items()]


def pretrain(corpus: str, save: str, updates: int, seed: int, threads: int, *overrides: str) -> None:
    """fairseq-hydra-train with the pre-training recipe; resumes from ``save``/checkpoint_last.pt when present.
    Its log is appended to ``save``/train.log."""
    cmd = [PY, "-m", "fairseq_cli.hydra_train", "--config-dir", "examples/mini", "--config-name", "pretraining",
           f"task.data={corpus}", f"optimization.max_update={updates}", f"common.seed={seed}",
           f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra", *overrides]
    env = command_env(threads)
    os.makedirs(save, exist_ok=True)
    with open(os.path.join(save, "train.log"), "a") as log_file:
        p = run_child(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        with open(os.path.join(save, "train.log")) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"pre-training failed ({p.returncode}): {' '.join(cmd)}\n{tail}")


def record_minutes(work: str, minutes: float, updates: int) -> List[dict]:
    """Append this invocation to WORK/runs.json (a resumed run counts every invocation's minutes)."""
    path = os.path.join(work, "runs.json")
    runs = json.load(open(path)) if os.path.exists(path) else []
    runs.append({"minutes": round(minutes, 1), "max_update": updates, "ended": time.strftime("%Y-%m-%d %H:%M")})
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    return runs


def held_out_provenance(synthesis: dict) -> dict:
    """What the unlabeled corpus held out (manifests/unlabeled.py): the labeled corpora's seed and the fingerprint
    of their dev/test voices and sentences, which the study checks before fine-tuning from this model."""
    from manifests.unlabeled import held_out, held_out_fingerprint

    seed = synthesis["corpora_seed"]
    if sorted(held_out(seed)[0]) != synthesis["held_out_voices"]:
        raise SystemExit("the unlabeled corpus held out other voices than today's dev/test subsets: synthesise it "
                         "again (delete WORK/corpus.done)")
    return {"corpora_seed": seed, "sha256": held_out_fingerprint(seed)}


def main(args: argparse.Namespace) -> None:
    t0 = time.time()
    # fairseq-hydra-train runs in its hydra.run.dir: every path it is given must be absolute
    out = args.out or os.path.join(os.path.dirname(PRETRAINED_MODEL), f"wav2vec2_{args.shape}.pt")
    args.work, args.out = os.path.abspath(args.work), os.path.abspath(out)
    save = os.path.join(args.work, "train")
    if args.restart:
        shutil.rmtree(save, ignore_errors=True)
        if os.path.exists(os.path.join(args.work, "runs.json")):
            os.remove(os.path.join(args.work, "runs.json"))
    corpus = prepare_unlabeled_corpus(os.path.abspath(args.corpus_work or args.work), args.utts, args.seed)
    log(f"pre-training for {args.updates} updates in all (log: {save}/train.log; resumes when started again)")
    pretrain(corpus, save, args.updates, args.seed, args.threads, *shape_overrides(args.shape))
    runs = record_minutes(args.work, (time.time() - t0) / 60, args.updates)
    with open(os.path.join(save, "train.log")) as f:
        records = last_records(f)
    with open(os.path.join(corpus, "synthesis.json")) as f:
        synthesis = json.load(f)
    provenance = {
        "made_by": "scripts/make_pretrained_model.py", "recipe": "examples/mini/pretraining.yaml",
        "shape": args.shape, "updates": args.updates, "seed": args.seed, "threads": args.threads,
        "minutes": round(sum(r["minutes"] for r in runs), 1), "invocations": len(runs),
        "corpus": {"utts": args.utts, "hours": synthesis["hours"]},
        "held_out": held_out_provenance(synthesis),
        "last_train": records["train"], "last_valid": records["valid"],
    }
    ship_checkpoint(os.path.join(save, "checkpoint_last.pt"), args.out, "pretrained_model", provenance)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:  # the same provenance, readable without torch
        json.dump(provenance, f, indent=1)
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB): {json.dumps(provenance)}")


if __name__ == "__main__":
    with stopping_children("make_pretrained_model"):
        main(get_parser().parse_args())
