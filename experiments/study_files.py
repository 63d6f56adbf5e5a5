"""The study's files: a row's committed files (per-utterance counts, validation curve, dense model), the scratch
run folder a row resumes from, and the git commit of a finished row's files (experiments/study.py uses them)."""
import json
import os
import re
import shutil
import subprocess
import time
from typing import Dict, List, Optional

from . import bootstrap
from .common import REPO, log
from .fairseq_log import records


class RowFiles:
    """Where one row's committed files are."""

    def __init__(self, results: str, assets: str, name: str) -> None:
        self.counts = os.path.join(results, "study", "utterances", f"{name}.tsv")
        self.curve = os.path.join(results, "study", "curves", f"{name}.json")
        self.model = os.path.join(assets, f"{name}.pt")
        #: a pruned row's exported architecture per layer (fairseq-prune-export --plot)
        self.architecture = os.path.join(results, "study", "architecture", f"{name}.png")

    def problem(self, dense: bool) -> Optional[str]:
        """Why the row cannot be reused (a missing or unreadable file, named), or None."""
        try:
            read_counts(self.counts)
            with open(self.curve) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            return str(e)
        if dense:
            from fairseq_prune.io.checkpoints import CheckpointError, read_checkpoint

            try:
                read_checkpoint(self.model)
            except CheckpointError as e:
                return str(e)
        return None


def write_counts(path: str, ids: List[int], counts) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write("id\t" + "\t".join(bootstrap.COUNTS) + "\n")
        for i, row in zip(ids, counts):
            f.write(f"{i}\t" + "\t".join(str(int(v)) for v in row) + "\n")
    os.replace(path + ".tmp", path)


def read_counts(path: str):
    import numpy as np

    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["id", *bootstrap.COUNTS]:
            raise ValueError(f"{path}:1: not a per-utterance counts file")
        table = [line.split("\t") for line in f if line.strip()]
    try:
        values = np.asarray([[int(v) for v in r] for r in table], dtype=np.int64)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if values.ndim != 2 or values.shape[1] != len(header) or not len(values):
        raise ValueError(f"{path}: no rows, or rows of the wrong width")
    return [int(i) for i in values[:, 0]], values[:, 1:]


def best_dev_by(curves: List[str], updates: int) -> Optional[float]:
    """The best dev WER (in budget) by ``updates`` in the first of the ``curves`` files that exists (None: no such
    file, or no point by then)."""
    for path in curves:
        if os.path.exists(path):
            with open(path) as f:
                points = [p["wer_in_budget"] for p in json.load(f) if p["update"] <= updates]
            return min(points) if points else None
    return None


def validation_curve(log_path: str, subset: str) -> List[Dict]:
    """Every validation of a run's log: update, lr and the dev metrics."""
    with open(log_path) as f:
        lines = f.readlines()
    lr_by_epoch = {int(r["epoch"]): float(r["train_lr"]) for r in records(lines, "train") if "train_lr" in r}
    out = []
    for r in records(lines, subset):
        point = {"update": int(r[f"{subset}_num_updates"]), "epoch": int(r["epoch"]),
                 "lr": lr_by_epoch.get(int(r["epoch"]))}
        for key in ("wer", "uer", "intent_acc", "wer_in_budget", "det_macs_ratio"):
            if f"{subset}_{key}" in r:
                point[key] = float(r[f"{subset}_{key}"])
        out.append(point)
    return sorted({p["update"]: p for p in out}.values(), key=lambda p: p["update"])  # resumed runs log twice


def held_out_problem(start: str) -> str:
    """Why the self-supervised model ``start`` cannot start the study ("" when it can): it must exist and its
    provenance (the ``.json`` beside it) must say that its pre-training corpus held out today's dev and test
    voices and sentences."""
    from manifests.unlabeled import held_out_fingerprint

    provenance = os.path.splitext(start)[0] + ".json"
    if not os.path.exists(start) or not os.path.exists(provenance):
        return f"{start} (and its provenance {os.path.basename(provenance)}): make it with " \
               "scripts/make_pretrained_model.py"
    with open(provenance) as f:
        held = json.load(f).get("held_out") or {}
    if held.get("sha256") != held_out_fingerprint(held.get("corpora_seed", 1)):
        return f"a pre-trained model whose corpus holds out today's dev/test sets ({provenance} does not record " \
               "it): make it again with scripts/make_pretrained_model.py"
    return ""


def _updates(checkpoint: Dict) -> int:
    return int(checkpoint["optimizer_history"][-1]["num_updates"])


def latency_table_problem(table: str, model: str, command: str) -> str:
    """Why ``table`` cannot serve as the latency table of ``model``'s architecture ('' when it can): missing,
    unreadable, or made for another architecture; ``command`` makes one."""
    if not os.path.exists(table):
        return f"the latency table {table} (made by: {command})"
    from fairseq_prune.cost import Wav2Vec2Shape
    from fairseq_prune.io.checkpoints import load_w2v_source
    from fairseq_prune.io.errors import ConfigError
    from fairseq_prune.latency import LatencyTable

    try:
        LatencyTable.load(table).check(Wav2Vec2Shape.from_w2v_cfg(load_w2v_source(model).w2v_args.model))
    except ConfigError as e:
        return f"a latency table that serves ({e}; made by: {command})"
    return ""


def same_plan_or_set_aside(save: str, plan: Dict) -> None:
    """Keep a run folder only for the plan it was started with (``plan``: the run's updates, start model and
    overrides, written to ``save/plan.json`` on its first start). A folder started under another plan (the
    study's caps or recipe changed since) is set aside, never deleted, with a log line naming both, and the run
    starts afresh: resuming it would change its learning-rate schedule and target warm-up halfway."""
    path = os.path.join(save, "plan.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                before = json.load(f)
        except (OSError, ValueError) as e:
            before = {"unreadable": str(e)}
        if before == plan:
            return
        aside = f"{save}.other-plan-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(save, aside)
        changed = sorted(k for k in set(before) | set(plan) if before.get(k) != plan.get(k))
        log(f"study: {save} was started under another plan ({', '.join(changed)} differ): set aside as {aside}; "
            "the run starts afresh")
    os.makedirs(save, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(plan, f, indent=1)
    os.replace(path + ".tmp", path)


def set_aside_unreadable(save: str) -> int:
    """Make a run folder resumable or fresh; returns the updates its ``checkpoint_last.pt`` has made (0: the run
    starts afresh), so that the 64 MB file is read once. A ``checkpoint_last.pt`` that does not read (a session
    killed while fairseq copied it) is set aside, never deleted, and replaced by the newest epoch checkpoint that
    reads (fairseq writes those atomically; the study keeps the last two); with none, the folder is set aside and
    the run starts again. Each step is logged with its path."""
    last = os.path.join(save, "checkpoint_last.pt")
    if not os.path.exists(last):
        return 0
    from fairseq_prune.io.checkpoints import CheckpointError, read_checkpoint

    try:
        return _updates(read_checkpoint(last))
    except CheckpointError as e:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log(f"study: {e}")
    os.replace(last, f"{last}.unreadable-{stamp}")
    for path in sorted((os.path.join(save, n) for n in os.listdir(save) if re.fullmatch(r"checkpoint\d+\.pt", n)),
                       key=lambda p: int(re.sub(r"\D", "", os.path.basename(p))), reverse=True):
        try:
            updates = _updates(read_checkpoint(path))
        except CheckpointError as e:
            log(f"study: {e}")
            continue
        shutil.copyfile(path, last + ".tmp")
        os.replace(last + ".tmp", last)
        log(f"study: {save} resumes from {os.path.basename(path)} (the unreadable checkpoint_last.pt is kept as "
            f"checkpoint_last.pt.unreadable-{stamp})")
        return updates
    aside = f"{save}.unreadable-{stamp}"
    os.replace(save, aside)
    log(f"study: no readable checkpoint in {save}: the run starts again (its folder is kept as {aside})")
    return 0


def record_invocation(save: str, minutes: float) -> float:
    """Add this invocation's minutes to the run's ``invocations.json``; returns the run's minutes so far: the total
    over the recorded invocations, or the minutes the training invocations in its log ran (from their timestamps)
    when that is more (an invocation killed by the end of a session records nothing here, but its log stays)."""
    path = os.path.join(save, "invocations.json")
    runs = json.load(open(path)) if os.path.exists(path) else []
    runs.append({"minutes": round(minutes, 1), "ended": time.strftime("%Y-%m-%d %H:%M")})
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
    return round(max(sum(r["minutes"] for r in runs), logged_wall_minutes(training_log(save))), 1)


def stop_reason(log_path: str) -> Optional[str]:
    """Why a dense run's training ended: ``"plateau"`` (fairseq stopped it at ``optimization.stop_min_lr``, the
    protocol's criterion), ``"cap"`` (a log without that line: it reached ``max_update``), None without a log."""
    if not os.path.exists(log_path):
        return None
    with open(log_path) as f:
        return "plateau" if "stopping training because current learning rate" in f.read() else "cap"


def training_log(save: str) -> str:
    """The log of every training invocation of a run folder: hydra's own (``hydra/hydra_train.log``, appended by
    each invocation as it runs), else the runner's ``train.log`` (which runs before December 7 wrote only when an
    invocation ended, so a killed one left nothing there)."""
    hydra = os.path.join(save, "hydra", "hydra_train.log")
    return hydra if os.path.exists(hydra) else os.path.join(save, "train.log")


def logged_wall_minutes(log_path: str) -> float:
    """The minutes a training log's invocations ran, summed: each from its first to its last timestamped line
    (fairseq's own ``wall`` counter is not used: a run resumed mid-epoch logs it as 0), less any silence longer
    than :data:`PAUSE_MINUTES` between two lines (the study's runs log every 100 updates, about a minute: such a
    gap is a run held by SIGSTOP, not training); 0 without a log. An invocation starts at the configuration
    fairseq prints first."""
    if not os.path.exists(log_path):
        return 0.0
    total, last = 0.0, None
    with open(log_path, errors="replace") as f:
        for line in f:
            found = _STAMP.match(line)
            if found is None:
                continue
            t = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
            if last is not None and _INVOCATION not in line and t - last <= PAUSE_MINUTES * 60:
                total += t - last
            last = t
    return total / 60


#: a longer silence in a study run's log is a pause (SIGSTOP), not training
PAUSE_MINUTES = 10
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]")
_INVOCATION = "{'_name': None, 'common':"


def git_head() -> str:
    p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def commit_files(paths: List[str], message: str, tries: int = 20) -> None:
    """``git add`` + ``git commit`` of ``paths`` only (retried while another git command holds the index)."""
    rel = [os.path.relpath(p, REPO) for p in paths if os.path.exists(p)]
    for attempt in range(tries):
        add = subprocess.run(["git", "add", "--", *rel], cwd=REPO, capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", *rel], cwd=REPO, capture_output=True, text=True
        ).returncode == 0
        if done:
            log(f"study: committed {message}")
            return
        time.sleep(3)
    log(f"study: could not commit {rel} ({message}); commit them by hand")
