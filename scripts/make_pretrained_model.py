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
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mini import PY, REPO, log  # noqa: E402

PRETRAINED_MODEL = os.path.join(REPO, "assets", "pretrained", "wav2vec2_mini.pt")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "pretrain"), help="scratch folder")
    p.add_argument("--updates", type=int, default=20000, help="pre-training updates in all (default 20000)")
    p.add_argument("--utts", type=int, default=20000, help="unlabeled training utterances (default 20000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the training process (0: default)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming WORK/train")
    p.add_argument("--out", default=PRETRAINED_MODEL)
    return p


def prepare_corpus(work: str, utts: int, seed: int) -> str:
    """The unlabeled corpus (synthesised once for these settings); returns its folder (holds the manifests)."""
    corpus = os.path.join(work, "corpus")
    stamp = corpus + ".done"
    settings = {"utts": utts, "seed": seed}
    if not (os.path.exists(stamp) and json.load(open(stamp)) == settings):
        log(f"synthesising the unlabeled corpus ({utts} utterances) in {corpus}")
        out = subprocess.run([PY, "manifests/unlabeled.py", "--out", corpus, "--utts", str(utts), "--seed",
                              str(seed), "--overwrite"], cwd=REPO, text=True, capture_output=True)
        if out.returncode != 0:
            raise SystemExit(f"manifests/unlabeled.py failed: {out.stderr.strip().splitlines()[-1:]}")
        print(out.stdout.strip(), flush=True)
        with open(stamp, "w") as f:
            json.dump(settings, f)
    return corpus


def pretrain(corpus: str, save: str, updates: int, seed: int, threads: int) -> None:
    """fairseq-hydra-train with the pre-training recipe; resumes from ``save``/checkpoint_last.pt when present.
    Its log is appended to ``save``/train.log."""
    cmd = [PY, "-m", "fairseq_cli.hydra_train", "--config-dir", "examples/mini", "--config-name", "pretraining",
           f"task.data={corpus}", f"optimization.max_update={updates}", f"common.seed={seed}",
           f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    os.makedirs(save, exist_ok=True)
    with open(os.path.join(save, "train.log"), "a") as log_file:
        p = subprocess.run(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        with open(os.path.join(save, "train.log")) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"pre-training failed ({p.returncode}): {' '.join(cmd)}\n{tail}")


def last_records(log_path: str) -> Dict[str, Optional[dict]]:
    """The last training (``train_inner``/``train``) and validation records of a fairseq JSON log."""
    found: Dict[str, Optional[dict]] = {"train": None, "valid": None}
    with open(log_path) as f:
        for line in f:
            if "][INFO] - {" not in line:
                continue
            kind = "valid" if "[valid][INFO]" in line else "train" if "[train_inner][INFO]" in line else None
            if kind:
                found[kind] = json.loads(line.split(" - ", 1)[1])
    return found


def record_minutes(work: str, minutes: float, updates: int) -> List[dict]:
    """Append this invocation to WORK/runs.json (a resumed run counts every invocation's minutes)."""
    path = os.path.join(work, "runs.json")
    runs = json.load(open(path)) if os.path.exists(path) else []
    runs.append({"minutes": round(minutes, 1), "max_update": updates, "ended": time.strftime("%Y-%m-%d %H:%M")})
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    return runs


def ship(save: str, out: str, provenance: dict) -> None:
    """checkpoint_last.pt's weights in float16, no optimizer state, provenance added; written atomically."""
    import torch

    from fairseq_prune.checkpoints import save_atomic

    state = torch.load(os.path.join(save, "checkpoint_last.pt"), weights_only=False)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    state["last_optimizer_state"] = None
    state["criterion"] = None
    state["pretrained_model"] = provenance
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_atomic(state, out, force=True)


def main(args: argparse.Namespace) -> None:
    t0 = time.time()
    save = os.path.join(args.work, "train")
    if args.restart:
        shutil.rmtree(save, ignore_errors=True)
        if os.path.exists(os.path.join(args.work, "runs.json")):
            os.remove(os.path.join(args.work, "runs.json"))
    corpus = prepare_corpus(args.work, args.utts, args.seed)
    log(f"pre-training for {args.updates} updates in all (log: {save}/train.log; resumes when started again)")
    pretrain(corpus, save, args.updates, args.seed, args.threads)
    runs = record_minutes(args.work, (time.time() - t0) / 60, args.updates)
    records = last_records(os.path.join(save, "train.log"))
    with open(os.path.join(corpus, "synthesis.json")) as f:
        synthesis = json.load(f)
    provenance = {
        "made_by": "scripts/make_pretrained_model.py", "recipe": "examples/mini/pretraining.yaml",
        "updates": args.updates, "seed": args.seed, "threads": args.threads,
        "minutes": round(sum(r["minutes"] for r in runs), 1), "invocations": len(runs),
        "corpus": {"utts": args.utts, "hours": synthesis["hours"]},
        "last_train": records["train"], "last_valid": records["valid"],
    }
    ship(save, args.out, provenance)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:  # the same provenance, readable without torch
        json.dump(provenance, f, indent=1)
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB): {json.dumps(provenance)}")


if __name__ == "__main__":
    main(get_parser().parse_args())
