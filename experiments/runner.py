"""Running one method on one corpus through the project's command lines: ``fairseq-hydra-train`` with a mini
recipe (``examples/mini``), ``fairseq-prune-export`` when the model has gates, ``fairseq-prune-infer`` on the test
subset; :func:`run_method` returns the result row."""
import json
import os
import shutil
import subprocess
import time
from typing import Optional

from .common import PY, REPO, START_MODEL, command_env, log, run
from .corpora import SUBSETS
from .fairseq_log import progress_line
from .processes import popen
from .report import row_cells
from .timing import load_model


def _fresh_save_dir(save_dir: str) -> None:
    """An empty ``save_dir``: fairseq would resume from its checkpoint_last.pt, so an earlier run is kept aside."""
    if os.path.exists(save_dir):
        previous = save_dir.rstrip("/") + ".previous"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(save_dir, previous)
        log(f"an earlier run is kept in {previous}")
    os.makedirs(save_dir)


def train(corpus: str, method: str, manifest: str, save_dir: str, updates: int, *overrides: str,
          threads: int = 0, start: str = START_MODEL, resume: bool = False) -> str:
    """Fine-tune ``start`` (model.w2v_path: a shipped start model, a dense model fine-tuned from one, or an
    exported model for a recipe without gates) on one corpus with a mini recipe; streams a progress line per log
    interval. ``threads``: torch threads of the training process (0: torch's default). ``resume``: continue
    from ``save_dir``'s checkpoint_last.pt when there is one (the log is appended to); otherwise an earlier run
    in ``save_dir`` is kept aside and training starts afresh."""
    save_dir = os.path.abspath(save_dir)  # fairseq-hydra-train runs in its hydra folder: no relative paths
    cmd = [PY, "-m", "fairseq_cli.hydra_train", "--config-dir", "examples/mini", "--config-name", method,
           f"corpus={corpus}", f"common.user_dir={REPO}/fairseq_prune", f"task.data={manifest}",
           f"model.w2v_path={os.path.abspath(start)}", f"optimization.max_update={updates}",
           f"checkpoint.save_dir={save_dir}",
           f"hydra.run.dir={save_dir}/hydra", *overrides]
    if resume:
        os.makedirs(save_dir, exist_ok=True)
    else:
        _fresh_save_dir(save_dir)
    lines = []
    # each line is written as it comes: a run killed mid-way (end of a session) keeps its log for the resumed one
    with open(os.path.join(save_dir, "train.log"), "a" if resume else "w") as f, \
            popen(cmd, cwd=REPO, env=command_env(threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True) as p:
        for line in p.stdout:
            lines.append(line)
            f.write(line)
            f.flush()
            found = progress_line(line, updates)
            if found is not None:
                log(f"{corpus}/{method} {found[0]}: {found[1]}")
    if p.returncode != 0:
        raise SystemExit(f"training failed ({p.returncode}): {' '.join(cmd)}\n{''.join(lines[-40:])}")
    return os.path.join(save_dir, "checkpoint_best.pt")


def decode(manifest: str, subset: str, checkpoint: str, results: str) -> dict:
    """fairseq-prune-infer on one subset; returns its summary.json."""
    run(["fairseq-prune-infer", manifest, "--path", checkpoint, "--gen-subset", subset, "--results-path", results,
         "--max-tokens", "1000000", "--quiet", "--cpu"], log_file=os.path.join(results, "infer.log"))
    with open(os.path.join(results, "summary.json")) as f:
        return json.load(f)


def export(checkpoint: str, out: str, plot: str, latency_table: Optional[str] = None) -> dict:
    """fairseq-prune-export; returns the pruning summary (with ``latency_table``: its ``latency``, predicted and
    measured)."""
    summary = out + ".summary.json"
    latency = ["--latency-table", latency_table, "--measure-latency"] if latency_table else []
    run(["fairseq-prune-export", checkpoint, out, "--force", "--plot", plot, "--summary-json", summary, *latency],
        log_file=out + ".export.log")
    with open(summary) as f:
        return json.load(f)


def dense_costs(checkpoint: str, manifest: str) -> dict:
    """Parameters and MACs at 10 s of a model without gates (and the per-layer sizes of an exported one)."""
    from fairseq_prune.io.checkpoints import PER_LAYER_SIZES
    from fairseq_prune.cost import REFERENCE_SAMPLES, cost_breakdown, totals

    model = load_model(checkpoint, manifest)
    t = totals(cost_breakdown(model.shape(), REFERENCE_SAMPLES))["total"]
    out = {"params": int(t.params), "macs": int(t.macs)}
    if all(model.cfg.get(k, None) for k in PER_LAYER_SIZES):  # a fine-tuned exported model: its sizes
        out["architecture"] = {k: list(model.cfg[k]) for k in PER_LAYER_SIZES}
    return out


def run_name(corpus: str, label: str, seed: int = None) -> str:
    """A run's folder and file name (labels hold spaces and "0.3/0.5")."""
    name = f"{corpus}-{label}" + (f"-seed{seed}" if seed is not None else "")
    return name.replace(" ", "_").replace("/", "-")


def _costs(method: str, best: str, manifest: str, save: str, plot: str) -> tuple:
    """(model to decode, its cost fields): a dense model as trained, a gated one exported first."""
    from fairseq_prune.io.checkpoints import PER_LAYER_SIZES

    if method == "dense":
        return best, dense_costs(best, manifest)
    model = os.path.join(save, "pruned.pt")
    summary = export(best, model, plot)
    return model, {"params": summary["after"]["params"], "macs": summary["after"]["macs"],
                   "architecture": {k: summary["after"][k] for k in PER_LAYER_SIZES}}


def run_method(corpus: str, method: str, label: str, manifest: str, work: str, results: str, updates: int,
               lr: float, *overrides: str, threads: int = 0, validations: int = 2, start: str = START_MODEL,
               seed: int = None) -> dict:
    """Train one recipe on one corpus from ``start``, export it if it has gates, decode the test subset. Returns
    a result row (params, MACs at 10 s, WER, transcript WER and intent accuracy, training minutes, model path).

    ``lr``: peak learning rate of the model's weights (the start model is already fine-tuned: continuing needs
    a smaller one than training from a pre-trained model). ``validations``: how many times the run validates
    and saves a checkpoint (evenly spaced; the recipe's best-checkpoint metric picks among them). ``seed``:
    ``common.seed`` of the run (None: the recipe's), also part of the run's name."""
    name = run_name(corpus, label, seed)
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
           "start": os.path.relpath(start, REPO), "updates": updates,
           "train_minutes": round((time.time() - t0) / 60, 2)}
    model, costs = _costs(method, best, manifest, save, os.path.join(results, f"arch-{name}.png"))
    row.update(costs)
    return _scored(row, name, manifest, model, save)


def _scored(row: dict, name: str, manifest: str, model: str, save: str) -> dict:
    """``row`` with the test scores of ``model`` (decoded into ``save/decode``) and its path."""
    scores = decode(manifest, SUBSETS[row["corpus"]]["test"], model, os.path.join(save, "decode"))
    row.update({"wer": scores.get("wer"), "transcript_wer": scores.get("transcript_wer"),
                "intent_accuracy": scores.get("intent_accuracy"), "checkpoint": model})
    log(f"{name}: {row_cells(row)}")
    return row


def score_model(corpus: str, label: str, model: str, manifest: str, work: str, seed: int = None) -> dict:
    """The result row of a model without gates as it is, untrained here (a shipped model): costs and test
    scores, like :func:`run_method`'s rows (``train_minutes`` 0)."""
    name = run_name(corpus, label, seed)
    row = {"corpus": corpus, "method": label, "recipe": None, "overrides": [], "seed": seed,
           "start": os.path.relpath(model, REPO), "train_minutes": 0.0, **dense_costs(model, manifest)}
    save = os.path.join(work, "runs", name)
    os.makedirs(save, exist_ok=True)
    return _scored(row, name, manifest, model, save)
