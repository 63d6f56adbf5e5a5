"""The converged study, resumable across sessions (``scripts/study.py --protocol converged``).

State lives in two places. Committed (``docs/results/``, ``assets/study/``): one row per finished run in
``study.json`` with its per-utterance test counts (``study/utterances/NAME.tsv``: what the intervals are computed
from) and validation curve (``study/curves/NAME.json``), and the dense models that later rows need (weights only).
Scratch (``work/study/runs/NAME``): fairseq's save folder, whose ``checkpoint_last.pt`` a run resumes from when it
was interrupted (kill -9, end of a session) on the same machine.

A row is done when ``study.json`` has it and its files read back; one whose files are missing or corrupt is
reported with its path and run again, as is a run folder whose ``checkpoint_last.pt`` does not read (moved aside,
never deleted). A row replaces any earlier row of the same name, so none counts twice.

A dense row that stopped at an earlier, lower update cap rather than by its plateau rule is not done: it continues
from its run folder's ``checkpoint_last.pt`` up to today's :data:`DENSE_MAX_UPDATES` (its committed row stays in
``study.json`` until the continued one replaces it). Without that folder on this machine it stays as committed,
and the log says so.
"""
import json
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

from . import bootstrap
from .common import PRETRAINED_MODEL, REPO, log
from .corpora import SUBSETS
from .runner import decode, export, train
from .study_files import (RowFiles, best_dev_by, commit_files, git_head, held_out_problem, latency_table_problem,
                          read_counts, record_invocation, same_plan_or_set_aside, set_aside_unreadable, stop_reason,
                          training_log, validation_curve, write_counts)
from .study_plan import (DENSE_MAX_UPDATES, FINETUNE_MAX_UPDATES, LATENCY_TABLE, LATENCY_TABLE_COMMAND, METHODS,
                         PRUNED_MAX_UPDATES, Row, overrides, protocol_rows, rows, scored_metrics)
from .study_report import cells

RESULTS = os.path.join(REPO, "docs", "results")
ASSETS = os.path.join(REPO, "assets", "study")
SMALL_PRETRAINED = os.path.join(os.path.dirname(PRETRAINED_MODEL), "wav2vec2_small.pt")
COMMAND = "python scripts/study.py --protocol converged"


class Study:
    """The rows, their state and the lock that serialises writing results (runs go side by side in threads)."""

    def __init__(self, work: str, manifests: Dict[str, str], results: str = RESULTS, assets: str = ASSETS,
                 commit: bool = False, threads: int = 1) -> None:
        self.work, self.manifests, self.results, self.assets = work, manifests, results, assets
        self.commit, self.threads = commit, threads
        self.path = os.path.join(results, "study.json")
        self.latency_table = os.path.join(assets, os.path.basename(LATENCY_TABLE))
        self._table_problem: Optional[str] = None
        self.lock = threading.Lock()
        self.done: Dict[str, Dict] = {}
        self.continued: Dict[str, Dict] = {}  # committed dense rows at an earlier cap, being trained further
        if os.path.exists(self.path):
            with open(self.path) as f:
                for row in json.load(f)["rows"]:
                    problem = self.files(row["name"]).problem(row["method"] in ("dense", "small-dense"))
                    if problem is not None:
                        log(f"study: row {row['name']} cannot be reused and runs again: {problem}")
                    elif self.continues(row):
                        self.continued[row["name"]] = row
                    else:
                        self.done[row["name"]] = row

    def continues(self, row: Dict) -> bool:
        """Whether a committed dense row trains further: it stopped at a cap below today's and not by its
        plateau rule, and its run folder (``checkpoint_last.pt``) is on this machine."""
        if row["method"] not in ("dense", "small-dense") or row["updates"] >= DENSE_MAX_UPDATES:
            return False
        save = self.run_folder(row["name"])
        if (row.get("stopped") or stop_reason(training_log(save))) == "plateau":
            return False
        if not os.path.exists(os.path.join(save, "checkpoint_last.pt")):
            log(f"study: row {row['name']} stopped at {row['updates']} updates, below today's cap of "
                f"{DENSE_MAX_UPDATES}, but {save}/checkpoint_last.pt is not on this machine: it stays as committed")
            return False
        log(f"study: row {row['name']} stopped at the cap of {row['updates']} updates, not by its plateau rule: it "
            f"continues from {save}/checkpoint_last.pt to at most {DENSE_MAX_UPDATES}")
        return True

    def run_folder(self, name: str) -> str:
        """A row's fairseq save folder (scratch, on this machine only): an interrupted run resumes from its
        ``checkpoint_last.pt``."""
        return os.path.join(self.work, "runs", name)

    def files(self, name: str) -> RowFiles:
        return RowFiles(self.results, self.assets, name)

    # ------------------------------------------------------------------------------------------- dependencies
    def resolve(self, row: Row) -> Tuple[Optional[Row], str]:
        """The row to run (``prune_from`` decided) or None with what it waits for."""
        if row.prune_from != "auto":
            return row, ""
        probes = [self.done.get(p.name) for p in protocol_rows()]
        if None in probes:
            return None, "the two protocol rows (" + ", ".join(p.name for p in protocol_rows()) + ")"
        best = min(probes, key=lambda r: r["best_dev"])
        return row.resolved(best["prune_from"]), ""

    def needs(self, row: Row) -> Tuple[Optional[int], Optional[str], str]:
        """(updates, teacher, what it waits for): dense rows run to their cap; a pruned row waits for both dense
        runs of its corpus (its updates: the longer one's, at most :data:`PRUNED_MAX_UPDATES`) and for the latency
        table (every pruned row is exported with it), and distils from seed 1's model; a fine-tuning row waits for
        its pruned row and that row's shipped (or still exported) model."""
        if row.dense:
            start = PRETRAINED_MODEL if row.method == "dense" else SMALL_PRETRAINED
            return DENSE_MAX_UPDATES, None, held_out_problem(start)
        if row.finetune:
            if row.source.name not in self.done:
                return None, None, f"the row {row.source.name}"
            shipped, exported = self.files(row.source.name).model, self.exported(row.source)
            if not os.path.exists(shipped) and not os.path.exists(exported):
                return None, None, (f"{row.source.name}'s exported model: neither {shipped} nor {exported} is here "
                                    f"(run that row again: remove it from {self.path})")
            return FINETUNE_MAX_UPDATES, None, ""
        dense = [self.done.get(Row(row.corpus, "dense", s).name) for s in (1, 2)]
        if None in dense:
            return None, None, f"the dense rows of {row.corpus}"
        table_problem = self.table_problem()
        if table_problem:
            return None, None, table_problem
        updates = min(max(r["updates"] for r in dense), PRUNED_MAX_UPDATES)
        return updates, self.files(Row(row.corpus, "dense", 1).name).model, ""

    def table_problem(self) -> str:
        """Why the latency table cannot serve the pruned rows ('' when it can), checked once per study."""
        if self._table_problem is None:
            self._table_problem = latency_table_problem(self.latency_table, PRETRAINED_MODEL, LATENCY_TABLE_COMMAND)
        return self._table_problem

    def exported(self, row: Row) -> str:
        """Where a pruned row's exported model is written (on this machine only)."""
        return os.path.join(self.run_folder(row.name), "pruned.pt")

    def start_model(self, row: Row) -> str:
        if row.method == "small-dense":
            return SMALL_PRETRAINED
        if row.finetune:
            shipped = self.files(row.source.name).model
            if not os.path.exists(shipped):  # its row ended before it was shipped: ship it from the run folder
                self.ship_exported(row.source, self.exported(row.source))
            return shipped
        if row.prune_from == "dense":
            return self.files(Row(row.corpus, "dense", 1).name).model
        return PRETRAINED_MODEL

    # ---------------------------------------------------------------------------------------------- one row
    def run(self, row: Row) -> Dict:
        """Train (resuming), ship or export, decode the test set, score with intervals; writes and commits the row."""
        updates, teacher, _ = self.needs(row)
        save = self.run_folder(row.name)
        recipe = "dense_converged" if row.finetune else METHODS[row.method][0]
        extra = overrides(row, updates, teacher, self.latency_table)
        if not row.dense:  # a dense row continues under a raised cap (continues); a pruned one never changes plan
            plan = {"recipe": recipe, "updates": updates, "start": self.start_model(row), "overrides": extra}
            same_plan_or_set_aside(save, json.loads(json.dumps(plan).replace(REPO, "<repo>")))
        trained = set_aside_unreadable(save)  # and the updates its checkpoint_last.pt has made
        t0 = time.time()
        best = os.path.join(save, "checkpoint_best.pt")
        if trained < updates:  # fairseq resumed at its max_update still makes one more update
            best = train(row.corpus, recipe, self.manifests[row.corpus], save, updates, *extra,
                         f"common.seed={row.seed}", threads=self.threads, start=self.start_model(row), resume=True)
        minutes = record_invocation(save, (time.time() - t0) / 60)
        files = self.files(row.name)
        subset = SUBSETS[row.corpus]["valid"]
        curve = validation_curve(training_log(save), subset)
        if row.dense:
            model, costs = self.ship_dense(row, best, curve, minutes)
        elif row.finetune:  # trained without gates at the exported sizes: decoded as it is
            from .runner import dense_costs

            model, costs = best, dense_costs(best, self.manifests[row.corpus])
            costs["macs_ratio"] = costs["macs"] / self.dense_macs(row, costs["macs"])
            if "latency" in self.done[row.source.name]:  # the same architecture as its pruned row's
                costs["latency"] = self.done[row.source.name]["latency"]
        else:
            model, costs = self.export_pruned(row, best, self.exported(row))
        scores = decode(self.manifests[row.corpus], SUBSETS[row.corpus]["test"], model,
                        os.path.join(save, "decode-test"))
        ids, counts = bootstrap.utterance_counts(os.path.join(save, "decode-test"))
        write_counts(files.counts, ids, counts)
        os.makedirs(os.path.dirname(files.curve), exist_ok=True)
        with open(files.curve, "w") as f:
            json.dump(curve, f, indent=1)
        result = self.row_dict(row, costs, (ids, counts), scores, curve, minutes, updates)
        if row.dense:
            result["stopped"] = stop_reason(training_log(save))
        with self.lock:
            self.done[row.name] = result
            self.write()
            if self.commit:
                paths = [self.path, files.counts, files.curve, os.path.splitext(self.path)[0] + ".md", *self.plots()]
                if row.dense:
                    paths += [files.model, os.path.splitext(files.model)[0] + ".json"]
                elif not row.finetune:
                    paths += [files.architecture] + ([files.model] if self.is_source(row) else [])
                else:  # shipped from its pruned row's run folder if that row ended before it was
                    paths.append(self.files(row.source.name).model)
                commit_files(paths, f"study: {row.name} ({cells(result)})")
        return result

    def export_pruned(self, row: Row, best: str, model: str) -> Tuple[str, Dict]:
        """Export a pruned row's ``best`` checkpoint to ``model`` with its architecture plot and, with the latency
        table, predicted and measured latency; ship it when a later row fine-tunes it. Returns (model, costs)."""
        files = self.files(row.name)
        table = self.latency_table if os.path.exists(self.latency_table) else None
        if table is None:
            log(f"study: {row.name}: no latency table at {self.latency_table}: no predicted or measured latency")
        os.makedirs(os.path.dirname(files.architecture), exist_ok=True)
        summary = export(best, model, files.architecture, latency_table=table)
        costs = {"params": summary["after"]["params"], "macs": summary["after"]["macs"],
                 "macs_ratio": summary["after"]["macs"] / summary["before"]["macs"],
                 "architecture": {k: summary["after"][k] for k in ("conv_channels", "attention_heads", "ffn_units")}}
        if "latency" in summary:  # predicted by the table, and both models timed side by side at export
            costs["latency"] = {k: v for k, v in summary["latency"].items() if k != "table"}
        if self.is_source(row):  # a later row fine-tunes it: shipped, weights only
            self.ship_exported(row, model)
        return model, costs

    def ship_exported(self, row: Row, model: str) -> None:
        from experiments.checkpoints import ship_checkpoint

        ship_checkpoint(model, self.files(row.name).model, "study_model",
                        {"made_by": COMMAND, "row": row.name, "commit": git_head()})

    @staticmethod
    def is_source(row: Row) -> bool:
        """Whether a row of the plan fine-tunes ``row``'s exported model. A fine-tuning row of an ``auto`` row
        counts both rows it may resolve to: when a protocol row ends, which of the two wins is not known yet."""
        for r in rows():
            source = r.source
            if source is not None and row in (source, source.resolved(row.prune_from) if r.prune_from == "auto"
                                              else source):
                return True
        return False

    def ship_dense(self, row: Row, best: str, curve: List[Dict], minutes: float) -> Tuple[str, Dict]:
        """The dense model as later rows need it: weights only, float16, with its provenance."""
        from experiments.checkpoints import ship_checkpoint

        from .runner import dense_costs

        files = self.files(row.name)
        provenance = {"made_by": COMMAND, "row": row.name, "start": os.path.relpath(self.start_model(row), REPO),
                      "data": f"{row.corpus} {SUBSETS[row.corpus]['train']}", "updates": curve[-1]["update"],
                      "minutes": minutes, "best_dev": min(p["wer_in_budget"] for p in curve), "commit": git_head()}
        ship_checkpoint(best, files.model, "study_model", provenance)
        with open(os.path.splitext(files.model)[0] + ".json", "w") as f:
            json.dump(provenance, f, indent=1)
        costs = dense_costs(files.model, self.manifests[row.corpus])
        return files.model, {**costs, "macs_ratio": costs["macs"] / self.dense_macs(row, costs["macs"])}

    def dense_macs(self, row: Row, own: int) -> int:
        dense = self.done.get(Row(row.corpus, "dense", 1).name)
        return dense["macs"] if dense and row.method != "dense" else own

    def row_dict(self, row: Row, costs: Dict, decoded, scores: Dict, curve: List[Dict], minutes: float,
                 updates: int) -> Dict:
        out = {"name": row.name, "corpus": row.corpus, "method": row.method,
               "target": list(row.target) if row.target else None, "seed": row.seed,
               "distill": row.distill if not row.dense else "none", "prune_from": None if row.dense else row.prune_from,
               "finetuned_after_export": row.finetune,
               **costs, "test_utterances": len(decoded[0]), "updates": curve[-1]["update"] if curve else updates,
               "minutes": minutes, "best_dev": min(p["wer_in_budget"] for p in curve),
               "commit": git_head(), "command": f"{COMMAND} --only {row.name}"}
        reference = self.reference(row)
        for m in scored_metrics(row.corpus):
            out[m], ci = bootstrap.interval(decoded[1], m)
            out[m.replace("_accuracy", "") + "_ci"] = ci
            if reference is not None:
                diff, diff_ci = bootstrap.paired_interval(decoded, reference, m)
                out[f"{m}_vs_dense"], out[f"{m}_vs_dense_ci"] = diff, diff_ci
        out["summary_wer"] = scores.get("wer")  # fairseq-prune-infer's own number (equals "wer")
        if not row.dense and not row.finetune and row.prune_from == "ssl":
            out["dense_best_dev_by_then"] = self.dense_dev_by(row, out["updates"])
        return out

    def dense_dev_by(self, row: Row, updates: int) -> Optional[float]:
        """The best dev WER (in budget) the dense run of ``row``'s corpus and seed (seed 1's if missing) had
        reached by ``updates``: what a row fine-tuned from the self-supervised model for fewer updates than the
        dense run compares with (None without a dense curve)."""
        return best_dev_by([self.files(Row(row.corpus, "dense", seed).name).curve for seed in (row.seed, 1)], updates)

    def counts(self, name: str):
        """A committed row's per-utterance test counts (ids, counts)."""
        return read_counts(self.files(name).counts)

    def reference(self, row: Row):
        """The per-utterance counts of the dense row of the same corpus and seed (seed 1's if that is missing)."""
        if row.method == "dense":
            return None
        for seed in (row.seed, 1):
            name = Row(row.corpus, "dense", seed).name
            if name in self.done:
                return self.counts(name)
        return None

    # ---------------------------------------------------------------------------------------------- reports
    def write(self) -> None:
        from .study_report import against_control, study_markdown

        current = {**self.continued, **self.done}  # a continued row's committed result until it is replaced
        ordered = [current[r.name] for r in all_rows_resolved(self) if r.name in current]
        ordered += [r for n, r in current.items() if r not in ordered]
        os.makedirs(self.results, exist_ok=True)
        for path, text in ((self.path, json.dumps({"rows": ordered}, indent=1) + "\n"),
                           (os.path.splitext(self.path)[0] + ".md",
                            study_markdown(ordered, against_control(ordered, self.counts)))):
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
        from .study_report import plot_accuracy_vs_macs, plot_curves

        plot_accuracy_vs_macs(ordered, self.plots()[0])
        plot_curves(os.path.join(self.results, "study", "curves"), [r["name"] for r in ordered], self.plots()[1])

    def plots(self) -> List[str]:
        return [os.path.join(self.results, "study_accuracy_vs_macs.png"),
                os.path.join(self.results, "study_dev_curves.png")]


def all_rows_resolved(study: "Study") -> List[Row]:
    """The plan's rows with ``auto`` decided where it can be, each once: the headline row of the winning start is
    that protocol row itself."""
    out, seen = [], set()
    for r in rows():
        resolved, _ = study.resolve(r)
        row = resolved or r
        if row.name not in seen:
            seen.add(row.name)
            out.append(row)
    return out


def pending(study: Study, only: Optional[List[str]]) -> List[Row]:
    """The rows still to run, in the plan's order (``only``: names to restrict to)."""
    out = []
    for r in rows():
        resolved, _ = study.resolve(r)
        name = (resolved or r).name
        if name in study.done or (only and r.name not in only and name not in only):
            continue
        if resolved is not None and any(p.name == name for p in out):
            continue  # an "auto" row that resolved to a row already pending
        out.append(resolved or r)
    return out


def listing(study: Study, only: Optional[List[str]] = None) -> List[str]:
    """``--list``: one line per row, done (with its scores) or pending (what it waits for, or the
    ``checkpoint_last.pt`` an interrupted run resumes from)."""
    out = [f"done     {name}: {cells(row)}" for name, row in study.done.items()]
    for row in pending(study, only):
        resolved, waits = study.resolve(row)
        needs = study.needs(resolved)[2] if resolved else waits
        last = os.path.join(study.run_folder((resolved or row).name), "checkpoint_last.pt")
        state = f" (waits for {needs})" if needs else f" (resumes from {last})" if os.path.exists(last) else ""
        out.append(f"pending  {row.name}{state}")
    return out


def run_study(study: Study, jobs: int = 2, only: Optional[List[str]] = None,
              start_within: Optional[float] = None) -> List[Dict]:
    """Run the pending rows, ``jobs`` at a time, each as soon as what it needs is done; no new row starts after
    ``start_within`` minutes (so that a session's last runs can finish). Returns the rows finished here."""
    from concurrent.futures import ThreadPoolExecutor

    from .processes import first_done

    t0, finished, running, failed = time.time(), [], {}, set()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            late = start_within is not None and (time.time() - t0) / 60 > start_within
            for row in [] if late else pending(study, only):
                if len(running) >= jobs:
                    break
                if row.name in running or row.name in failed:
                    continue
                resolved, waits = study.resolve(row)
                updates, _, needs = study.needs(resolved) if resolved else (None, None, waits)
                if resolved is None or needs:
                    continue
                log(f"study: starting {resolved.name} ({updates} updates at most)")
                running[resolved.name] = pool.submit(study.run, resolved)
            if not running:
                break
            done = first_done(running.values())
            for name, future in list(running.items()):
                if future in done:
                    del running[name]
                    try:
                        finished.append(future.result())
                        log(f"study: {name} done: {cells(finished[-1])}")
                    except (Exception, SystemExit) as e:  # one failed run does not stop the others
                        failed.add(name)
                        log(f"study: {name} failed: {str(e)[:2000]}")
    left = pending(study, only)
    log(f"study: {len(finished)} rows finished, {len(failed)} failed, {len(left)} still to run"
        + ("" if not left else f" (next: {left[0].name})"))
    return finished
