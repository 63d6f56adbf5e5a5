"""What `make demo`, `make study` and the start-model script share: the mini wav2vec2 architecture and the
preparation of the two synthetic corpora with the project's own corpus scripts (the same code a user runs on
the real LibriSpeech and SLURP)."""
import json
import os
import subprocess
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from manifests.synthesize import DEFAULTS, SPEAKER_DEFAULTS  # noqa: E402
PY = sys.executable

#: the mini wav2vec2 (fairseq Wav2Vec2Config fields): 4 Transformer layers of 256, 4 heads of 64, FFN 1024,
#: 7 conv layers of 128 channels. Like wav2vec2-base, the CNN is a large share of the compute (41% of the MACs
#: at 10 s; base: 33%) and a small share of the parameters (7%; base: 4.5%).
MINI_W2V = dict(
    encoder_layers=4,
    encoder_embed_dim=256,
    encoder_ffn_embed_dim=1024,
    encoder_attention_heads=4,
    conv_feature_layers="[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2",
    conv_pos=64,
    conv_pos_groups=16,
)

#: the subsets of the synthetic corpora (LibriSpeech and SLURP names)
SUBSETS = {
    "librispeech": {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"},
    "slurp": {"train": "train", "valid": "devel", "test": "test"},
}

START_MODEL = os.path.join(REPO, "assets", "start_model", "wav2vec_ctc_mini.pt")
START_DICT = os.path.join(REPO, "assets", "start_model", "dict.ltr.txt")
#: the self-supervised mini wav2vec2 (scripts/make_pretrained_model.py): the paper's start point
PRETRAINED_MODEL = os.path.join(REPO, "assets", "pretrained", "wav2vec2_mini.pt")


def pyplot():
    """matplotlib's pyplot on the Agg backend, its loggers quiet (importing fairseq can leave the root logger at
    DEBUG, which would print every font matplotlib looks at)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run(cmd: List[str], log_file: str = None, env: Dict[str, str] = None) -> str:
    """Run a command; its output goes to ``log_file`` (if given) and is returned. Fails loudly with the tail."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    full_env["PATH"] = os.path.dirname(PY) + os.pathsep + full_env.get("PATH", "")
    p = subprocess.run(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        with open(log_file, "w") as f:
            f.write(p.stdout)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    return p.stdout


def prepare_corpora(work: str, seed: int = 1) -> Dict[str, str]:
    """Synthesise the mini LibriSpeech and mini SLURP corpora (unless already there for this seed) and write
    their manifests with manifests/librispeech.py and manifests/slurp.py. Returns the manifest folders."""
    work = os.path.abspath(work)  # fairseq-hydra-train runs in its hydra folder: the manifests need absolute paths
    corpora = os.path.join(work, "corpora")
    out = {}
    for layout, root_name in (("librispeech", "LibriSpeech"), ("slurp", "slurp")):
        root = os.path.join(corpora, root_name)
        stamp = root + ".done"  # written once synthesis finished, with the settings it used
        settings = {"seed": seed, **DEFAULTS[layout], **SPEAKER_DEFAULTS}
        if not (os.path.exists(stamp) and json.load(open(stamp)) == settings):
            log(f"synthesising the mini {layout} corpus with espeak-ng ({root})")
            print(run([PY, "manifests/synthesize.py", "--layout", layout, "--out", root, "--seed", str(seed),
                       "--overwrite"]).strip().splitlines()[-1], flush=True)
            with open(stamp, "w") as f:
                json.dump(settings, f)
        dest = os.path.join(work, "manifests", layout)
        subsets = SUBSETS[layout]
        # written afresh on every call: --overwrite replaces the manifests (and the start model's dictionary that
        # match_start_dictionary copied there) of an earlier call
        if layout == "librispeech":
            cmd = [PY, "manifests/librispeech.py", root, subsets["train"], subsets["valid"], subsets["test"],
                   "--dest", dest, "--overwrite"]
        else:
            cmd = [PY, "manifests/slurp.py", root, "--dest", dest, "--overwrite"]
        log(f"writing {layout} manifests ({dest})")
        run(cmd, log_file=os.path.join(work, "logs", f"manifests-{layout}.log"))
        out[layout] = dest
    return out


def train(corpus: str, method: str, manifest: str, save_dir: str, updates: int, *overrides: str,
          threads: int = 0, start: str = START_MODEL) -> str:
    """Fine-tune ``start`` (model.w2v_path: a shipped start model, a dense model fine-tuned from one, or an
    exported model for a recipe without gates) on one corpus with a mini recipe; streams a progress line per log
    interval. ``threads``: torch threads of the training process (0: torch's default)."""
    import subprocess as sp

    save_dir = os.path.abspath(save_dir)  # fairseq-hydra-train runs in its hydra folder: no relative paths
    cmd = [PY, "-m", "fairseq_cli.hydra_train", "--config-dir", "examples/mini", "--config-name", method,
           f"corpus={corpus}", f"common.user_dir={REPO}/fairseq_prune", f"task.data={manifest}",
           f"model.w2v_path={os.path.abspath(start)}", f"optimization.max_update={updates}",
           f"checkpoint.save_dir={save_dir}",
           f"hydra.run.dir={save_dir}/hydra", *overrides]
    if os.path.exists(save_dir):  # fairseq would resume from its checkpoint_last.pt: keep it aside, start afresh
        import shutil

        previous = save_dir.rstrip("/") + ".previous"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(save_dir, previous)
        log(f"an earlier run is kept in {previous}")
    os.makedirs(save_dir)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PATH"] = os.path.dirname(PY) + os.pathsep + env.get("PATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    lines = []
    with sp.Popen(cmd, cwd=REPO, env=env, stdout=sp.PIPE, stderr=sp.STDOUT, text=True) as p:
        for line in p.stdout:
            lines.append(line)
            if "][INFO] - {" in line and ("[train_inner]" in line or "_num_updates" in line):
                rec = json.loads(line.split(" - ", 1)[1])
                if "num_updates" in rec:
                    kind, get = "train", rec.get
                else:  # validation: keys are prefixed with the subset name (dev-clean_wer, ...)
                    prefix = next(k[: -len("_num_updates")] for k in rec if k.endswith("_num_updates"))
                    if prefix == "train":
                        continue
                    kind, get = "valid", (lambda k, p=prefix: rec.get(f"{p}_{k}"))
                parts = [f"update {get('num_updates')}/{updates}"]
                budget = [(f"{k}{s}", f"{label}{s}") for s in ("", "_cnn", "_transformer")  # sep_size: two terms
                          for k, label in (("exp_ratio", "E[budget]"), ("det_ratio", "budget"), ("target", "target"))]
                for key, label in (("ctc_loss", "ctc"), ("loss", "loss"), ("wer", "WER"), ("intent_acc", "intent"),
                                   *budget, ("det_macs_ratio", "MACs")):
                    if get(key) is not None and not (key == "loss" and get("ctc_loss") is not None):
                        parts.append(f"{label} {get(key)}")
                log(f"{corpus}/{method} {kind}: " + ", ".join(parts))
    with open(os.path.join(save_dir, "train.log"), "w") as f:
        f.writelines(lines)
    if p.returncode != 0:
        raise SystemExit(f"training failed ({p.returncode}): {' '.join(cmd)}\n{''.join(lines[-40:])}")
    return os.path.join(save_dir, "checkpoint_best.pt")


def decode(manifest: str, subset: str, checkpoint: str, results: str) -> dict:
    """fairseq-prune-infer on one subset; returns its summary.json."""
    run(["fairseq-prune-infer", manifest, "--path", checkpoint, "--gen-subset", subset, "--results-path", results,
         "--max-tokens", "1000000", "--quiet", "--cpu"], log_file=os.path.join(results, "infer.log"))
    with open(os.path.join(results, "summary.json")) as f:
        return json.load(f)


def export(checkpoint: str, out: str, plot: str) -> dict:
    """fairseq-prune-export; returns the pruning summary."""
    summary = out + ".summary.json"
    run(["fairseq-prune-export", checkpoint, out, "--force", "--plot", plot, "--summary-json", summary],
        log_file=out + ".export.log")
    with open(summary) as f:
        return json.load(f)


def load_for_timing(checkpoint: str, manifest: str):
    import fairseq_prune  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": manifest})
    return models[0].eval()


def speedups(dense_ckpt: str, pruned_ckpts: List[str], manifest: str, threads: int = 1, rounds: int = 5) -> List[dict]:
    """CPU latency of each exported model vs its dense baseline on one 10 s utterance, all models interleaved
    in each round, medians."""
    import torch

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_inference import time_models

    torch.set_num_threads(threads)
    models = {"dense": load_for_timing(dense_ckpt, manifest)}
    models.update({i: load_for_timing(ckpt, manifest) for i, ckpt in enumerate(pruned_ckpts)})
    audio = torch.randn(1, 160000)
    t = time_models({k: (lambda m=m: m(source=audio, padding_mask=None)) for k, m in models.items()}, rounds)
    return [{"dense_s": t["dense"], "pruned_s": t[i], "speedup": t["dense"] / t[i], "threads": threads}
            for i in range(len(pruned_ckpts))]


def dense_costs(checkpoint: str, manifest: str) -> dict:
    from fairseq_prune.checkpoints import PER_LAYER_SIZES
    from fairseq_prune.cost import REFERENCE_SAMPLES, cost_breakdown, totals

    model = load_for_timing(checkpoint, manifest)
    t = totals(cost_breakdown(model.shape(), REFERENCE_SAMPLES))["total"]
    out = {"params": int(t.params), "macs": int(t.macs)}
    if all(model.cfg.get(k, None) for k in PER_LAYER_SIZES):  # a fine-tuned exported model: its sizes
        out["architecture"] = {k: list(model.cfg[k]) for k in PER_LAYER_SIZES}
    return out


def add_pruning_args(p) -> None:
    """The pruning runs' schedule options that `make demo` and `make study` share."""
    p.add_argument("--warmup", type=int, default=300, help="target warm-up updates of the pruning runs")
    p.add_argument("--lagrangian-lr", type=float, default=None,
                   help="learning rate of lambda_1 (dual ascent; default: the mini recipe's, 20); see README, "
                   "'Tuning the Lagrangian'")
    p.add_argument("--lambda-2-init", type=float, default=None,
                   help="lambda_2 at the first update, a quadratic penalty that damps lambda_1's wind-up (default: "
                   "the mini recipe's, 1000)")


def pruning_overrides(args) -> List[str]:
    """fairseq-hydra-train overrides for the options of :func:`add_pruning_args`."""
    out = [f"criterion.target_warmup_updates={args.warmup}"]
    if args.lagrangian_lr is not None:
        out.append(f"optimizer.groups.lagrangian.lr_float={args.lagrangian_lr}")
    if args.lambda_2_init is not None:
        out.append(f"criterion.lambda_2_init={args.lambda_2_init}")
    return out


def random_init_model(start: str, work: str, seed: int = 1) -> str:
    """A randomly initialised wav2vec2 pre-training checkpoint of ``start``'s shape (fairseq's own classes and
    initialisation), written once under ``work``: the baseline that shows what pre-training is worth."""
    from omegaconf import OmegaConf

    from fairseq_prune.checkpoints import read_checkpoint, write_wav2vec2_checkpoint

    path = os.path.join(work, f"random_init-seed{seed}.pt")
    if not os.path.exists(path):
        cfg = read_checkpoint(start)["cfg"]
        model = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_name"}
        write_wav2vec2_checkpoint(path, model, normalize=bool(cfg.task.normalize), seed=seed)
    return path


#: the demo's and the study's two protocols (see scripts/demo.py); a flag given on the command line wins
PROTOCOLS = {
    "finetuned": dict(start=START_MODEL, prune_from="dense", updates=800, lr=0.0003, target=[0.5],
                      finetune_updates=600, seeds=[1], distill=0.0),
    "paper": dict(start=PRETRAINED_MODEL, prune_from="start", updates=1500, lr=0.0005, target=[0.55],
                  finetune_updates=0, seeds=[1, 2], distill=0.0),
}


def resolve_protocol(args):
    """Fill the options that the command line left at None from ``args.protocol``'s settings."""
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key, "absent") is None:
            setattr(args, key, value)
    return args


def is_finetuned(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is a model fine-tuned with CTC (it can be a distillation teacher), not a
    self-supervised one."""
    from fairseq_prune.checkpoints import read_checkpoint

    return "ctc" in read_checkpoint(checkpoint)["cfg"]["model"]["_name"]


def match_start_dictionary(manifests: Dict[str, str], start: str) -> None:
    """Continuing from the fine-tuned start model (assets/start_model) needs the dictionary it was fine-tuned with
    (its output layer's units) in every manifest; a pre-trained start builds its output layer from the manifest's
    own dictionary, which prepare_corpora wrote."""
    import shutil

    if os.path.abspath(start) == START_MODEL:
        for manifest in manifests.values():
            shutil.copy(START_DICT, os.path.join(manifest, "dict.ltr.txt"))


def run_method(corpus: str, method: str, label: str, manifest: str, work: str, results: str, updates: int,
               lr: float, *overrides: str, threads: int = 0, validations: int = 2, start: str = START_MODEL,
               seed: int = None) -> dict:
    """Train one recipe on one corpus from ``start``, export it if it has gates, decode the test subset. Returns
    a result row (params, MACs at 10 s, WER, transcript WER and intent accuracy, training minutes, model path).

    ``lr``: peak learning rate of the model's weights (the start model is already fine-tuned: continuing needs
    a smaller one than training from a pre-trained model). ``validations``: how many times the run validates
    and saves a checkpoint (evenly spaced; the recipe's best-checkpoint metric picks among them). ``seed``:
    ``common.seed`` of the run (None: the recipe's), also part of the run's name."""
    import time

    name = f"{corpus}-{label}" + (f"-seed{seed}" if seed is not None else "")
    name = name.replace(" ", "_").replace("/", "-")  # a file name (labels hold "0.3/0.5")
    if seed is not None:
        overrides = (*overrides, f"common.seed={seed}")
    save = os.path.join(work, "runs", name)
    lr_override = f"optimization.lr=[{lr}]" if method == "dense" else f"optimizer.groups.default.lr_float={lr}"
    t0 = time.time()
    every = max(updates // validations, 1)
    best = train(corpus, method, manifest, save, updates, f"dataset.validate_interval_updates={every}",
                 f"checkpoint.save_interval_updates={every}", "checkpoint.keep_interval_updates=1",
                 "common.log_interval=100", lr_override, *overrides, threads=threads, start=start)
    row = {"corpus": corpus, "method": label, "recipe": method, "overrides": list(overrides), "seed": seed,
           "start": os.path.relpath(start, REPO),
           "train_minutes": round((time.time() - t0) / 60, 2)}
    model = best
    if method == "dense":
        row.update(dense_costs(best, manifest))
    else:
        from fairseq_prune.checkpoints import PER_LAYER_SIZES

        model = os.path.join(save, "pruned.pt")
        summary = export(best, model, os.path.join(results, f"arch-{name}.png"))
        row.update({"params": summary["after"]["params"], "macs": summary["after"]["macs"],
                    "architecture": {k: summary["after"][k] for k in PER_LAYER_SIZES}})
    scores = decode(manifest, SUBSETS[corpus]["test"], model, os.path.join(save, "decode"))
    row.update({"wer": scores.get("wer"), "transcript_wer": scores.get("transcript_wer"),
                "intent_accuracy": scores.get("intent_accuracy"), "checkpoint": model})
    log(f"{name}: {row_cells(row)}")
    return row


def row_cells(r: dict) -> str:
    """``params (M) | GMACs | WER | intent accuracy`` of a result row (WER of the transcript: SLURP's intent token
    is not counted as a word)."""
    wer = r.get("transcript_wer") if r.get("transcript_wer") is not None else r["wer"]
    intent = f"{r['intent_accuracy']:.1f}" if r.get("intent_accuracy") is not None else "–"
    return f"{r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | {wer:.1f} | {intent}"
