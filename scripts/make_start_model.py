"""Regenerate the demo's starting model, ``assets/start_model/wav2vec_ctc_mini.pt``.

No pretrained wav2vec2 can be downloaded here, so the demo starts from a small model made by this script:

1. synthesise the mini LibriSpeech and mini SLURP corpora and write their manifests (experiments/corpora.py);
2. join their *training* subsets into one manifest, with one letter + intent dictionary (dev subsets for
   validation; the test subsets are never seen);
3. take the self-supervised mini wav2vec2 (``--init``, default ``assets/pretrained/wav2vec2_mini.pt``, made by
   scripts/make_pretrained_model.py) or, with ``--init random``, write a randomly initialised mini wav2vec2
   pre-training checkpoint of the older 4-layer shape with fairseq's own classes;
4. fine-tune it densely with CTC using fairseq's own ``wav2vec_ctc`` model (``fairseq-hydra-train``, the
   ``examples/mini/dense.yaml`` recipe) for ``--updates`` updates;
5. keep the best checkpoint's weights in float16, without optimizer state: a normal fairseq ``wav2vec_ctc``
   checkpoint, which ``model.w2v_path`` accepts (pruning an already fine-tuned model).

    python scripts/make_start_model.py [--updates 3000] [--init random] [--work work/start_model]
"""
import argparse
import os
import shutil
import time
from collections import Counter

from experiments.checkpoints import ship_checkpoint, write_wav2vec2_checkpoint
from experiments.common import MINI_W2V, PRETRAINED_MODEL, PY, REPO, START_MODEL, log, run
from experiments.corpora import SUBSETS, prepare_corpora
from experiments.fairseq_log import records
from experiments.processes import stopping_children


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(REPO, "work", "start_model"), help="scratch folder")
    p.add_argument("--corpora-work", default=os.path.join(REPO, "work", "demo"),
                   help="where the synthetic corpora and manifests live (shared with the demo)")
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", default=PRETRAINED_MODEL,
                   help="the wav2vec2 pre-training checkpoint to fine-tune (default: the shipped self-supervised "
                        "one), or 'random': a randomly initialised model of experiments/common.py's MINI_W2V shape")
    p.add_argument("--lr", type=float, default=0.0005, help="peak learning rate (tri-stage schedule)")
    p.add_argument("--max-tokens", type=int, default=320000, help="audio samples per batch")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the training process (0: default)")
    p.add_argument("--out", default=START_MODEL)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from WORK/train/checkpoint_last.pt instead of starting over "
                        "(fairseq resumes optimizer, schedule and data order; --updates may be changed)")
    return p


def join_training_manifests(manifests: dict, dest: str) -> str:
    """``train``/``valid`` manifests over both corpora (absolute paths under root ``/``) and their dictionary."""
    os.makedirs(dest, exist_ok=True)
    counts = Counter()
    for split, key in (("train", "train"), ("valid", "valid")):
        rows, labels = [], []
        for corpus, folder in manifests.items():
            subset = SUBSETS[corpus][key]
            with open(os.path.join(folder, f"{subset}.tsv")) as f:
                lines = f.read().splitlines()
            rows += [os.path.join(lines[0], line) for line in lines[1:]]
            with open(os.path.join(folder, f"{subset}.ltr")) as f:
                labels += f.read().splitlines()
        if split == "train":
            for line in labels:
                counts.update(line.split())
        with open(os.path.join(dest, f"{split}.tsv"), "w") as f:
            f.write("/\n" + "\n".join(rows) + "\n")
        with open(os.path.join(dest, f"{split}.ltr"), "w") as f:
            f.write("\n".join(labels) + "\n")
    with open(os.path.join(dest, "dict.ltr.txt"), "w") as f:
        f.writelines(f"{s} {n}\n" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return dest


def main(args: argparse.Namespace) -> None:
    from fairseq_prune.io.checkpoints import read_checkpoint

    t0 = time.time()
    # fairseq-hydra-train runs in its hydra.run.dir: every path it is given must be absolute
    args.work, args.corpora_work, args.out = map(os.path.abspath, (args.work, args.corpora_work, args.out))
    manifests = prepare_corpora(args.corpora_work, seed=args.seed)
    data = join_training_manifests(manifests, os.path.join(args.work, "manifest"))
    if args.init == "random":
        init, architecture = os.path.join(args.work, "w2v_init.pt"), MINI_W2V
        write_wav2vec2_checkpoint(init, MINI_W2V, seed=args.seed)
    else:
        init = os.path.abspath(args.init)
        cfg = read_checkpoint(init)["cfg"]["model"]
        architecture = {k: cfg[k] for k in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                                            "encoder_attention_heads", "conv_feature_layers", "conv_pos",
                                            "conv_pos_groups")}
    save = os.path.join(args.work, "train")
    if not (args.resume and os.path.exists(os.path.join(save, "checkpoint_last.pt"))):
        shutil.rmtree(save, ignore_errors=True)
    log(f"fine-tuning the mini wav2vec2 with fairseq's wav2vec_ctc for {args.updates} updates (log: {save}/train.log)")
    out = run([PY, "-m", "fairseq_cli.hydra_train", "--config-dir", "examples/mini", "--config-name", "dense",
               f"common.user_dir={REPO}/fairseq_prune", f"task.data={data}", f"model.w2v_path={init}",
               "model._name=wav2vec_ctc", "task._name=audio_finetuning", "checkpoint.best_checkpoint_metric=wer",
               "dataset.train_subset=train",
               "dataset.valid_subset=valid", f"optimization.max_update={args.updates}",
               f"dataset.validate_interval_updates={max(args.updates // 6, 1)}", f"common.seed={args.seed}",
               f"optimization.lr=[{args.lr}]", f"dataset.max_tokens={args.max_tokens}",
               f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra"],
              env={"OMP_NUM_THREADS": str(args.threads)} if args.threads else None, log_file=os.path.join(save, "train-resumed.log" if args.resume else "train.log"))
    valid = records(out.splitlines(), "valid")
    provenance = {
        "made_by": "scripts/make_start_model.py",
        "updates": args.updates,
        "seed": args.seed,
        "init": "random" if args.init == "random" else os.path.relpath(init, REPO),
        "lr": args.lr,
        "max_tokens": args.max_tokens,
        "architecture": architecture,
        "valid": valid[-1] if valid else None,
        "minutes": round((time.time() - t0) / 60, 1),
    }
    ship_checkpoint(os.path.join(save, "checkpoint_best.pt"), args.out, "start_model", provenance)
    shutil.copy(os.path.join(data, "dict.ltr.txt"), os.path.join(os.path.dirname(args.out), "dict.ltr.txt"))
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB) in {provenance['minutes']} min; "
        f"last validation: {provenance['valid']}")


if __name__ == "__main__":
    with stopping_children("make_start_model"):
        main(get_parser().parse_args())
