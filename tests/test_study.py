"""The converged study (experiments/study.py) on a tiny corpus: rows finish with their intervals, files and
commits; a second call skips them; an interrupted run resumes; corrupt rows and checkpoints are named and run
again, never reused; the plan's rows and overrides."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from experiments import bootstrap, study, study_files, study_plan, study_report
from experiments.study_plan import Row
from helpers import REPO, write_noise_corpus

ROWS = [Row("slurp", "dense", 1), Row("slurp", "dense", 2), Row("slurp", "HJ-Pruning-MAC", 1, (0.5,), "layers", "ssl")]
REQUIRED = ("corpus", "method", "target", "seed", "distill", "macs_ratio", "wer", "wer_ci", "intent_accuracy",
            "intent_ci", "transcript_wer", "transcript_wer_ci", "test_utterances", "updates", "minutes", "commit",
            "command")


def _held_out_provenance(model: str) -> None:
    from manifests.unlabeled import held_out_fingerprint

    with open(os.path.splitext(model)[0] + ".json", "w") as f:
        json.dump({"held_out": {"corpora_seed": 1, "sha256": held_out_fingerprint(1)}}, f)


def test_the_study_refuses_a_model_pretrained_on_the_eval_voices(tmp_path):
    model = str(tmp_path / "ssl.pt")
    open(model, "wb").close()
    assert "make it with scripts/make_pretrained_model.py" in study.held_out_problem(model)  # no provenance
    with open(tmp_path / "ssl.json", "w") as f:
        json.dump({"held_out": {"corpora_seed": 1, "sha256": "0" * 64}}, f)  # held out other dev/test sets
    assert "holds out today's dev/test sets" in study.held_out_problem(model)
    _held_out_provenance(model)
    assert study.held_out_problem(model) == ""


@pytest.fixture(scope="session")
def small_table(tmp_path_factory, small_w2v) -> str:
    """A latency table of the small test model (coarse and quick: its use here is to be there and fit)."""
    from fairseq_prune.cli import profile

    out = str(tmp_path_factory.mktemp("table") / "table.json")
    profile.main(profile.get_parser().parse_args([small_w2v, out, "--grid", "2", "--rounds", "1", "--seconds", "1"]))
    return out


@pytest.fixture
def tiny_study(tmp_path, small_w2v, small_table, monkeypatch):
    """A Study over a noise corpus in SLURP's subsets, the small test model as the self-supervised start (and its
    latency table in the assets), 24-update dense runs, three rows."""
    data = write_noise_corpus(str(tmp_path / "data"), {"train": 16, "devel": 6, "test": 6},
                              intents=["alarm_set", "play_music"])
    monkeypatch.setattr(study, "PRETRAINED_MODEL", small_w2v)
    _held_out_provenance(small_w2v)
    monkeypatch.setattr(study, "DENSE_MAX_UPDATES", 24)
    monkeypatch.setattr(study, "rows", lambda: list(ROWS))
    monkeypatch.setattr(study, "protocol_rows", lambda corpus="slurp": [ROWS[2], ROWS[2].resolved("dense")])
    monkeypatch.setattr(study_plan, "MAX_TOKENS", 80000)
    monkeypatch.setattr(study_plan, "DISTILL_LAYERS", (1, 2))

    os.makedirs(tmp_path / "assets", exist_ok=True)
    shutil.copy(small_table, tmp_path / "assets" / os.path.basename(study_plan.LATENCY_TABLE))

    def make(**kw):
        return study.Study(str(tmp_path / "work"), {"slurp": data}, results=str(tmp_path / "results"),
                           assets=str(tmp_path / "assets"), **kw)
    return make


@pytest.mark.slow
def test_rows_finish_with_intervals_then_are_skipped_and_corrupt_ones_rerun(tiny_study, tmp_path, capsys):
    s = tiny_study()
    finished = study.run_study(s, jobs=2)
    assert sorted(r["name"] for r in finished) == sorted(r.name for r in ROWS)
    saved = json.load(open(tmp_path / "results" / "study.json"))["rows"]
    assert [r["name"] for r in saved] == [r.name for r in ROWS]  # the plan's order
    for r in saved:
        assert all(r.get(k) is not None or k == "target" for k in REQUIRED), r
        for key, ci in (("wer", "wer_ci"), ("intent_accuracy", "intent_ci"), ("transcript_wer", "transcript_wer_ci")):
            assert ci and r[ci][0] <= r[key] <= r[ci][1]
        assert r["test_utterances"] == 6 and r["updates"] == 24
    dense, pruned = saved[0], saved[2]
    assert dense["macs_ratio"] == 1.0 and "wer_vs_dense" not in dense
    # exported (24 updates close no gate yet): its costs and per-layer sizes come from the export summary
    assert 0 < pruned["macs_ratio"] <= 1.0 and pruned["macs"] == pytest.approx(pruned["macs_ratio"] * dense["macs"])
    assert set(pruned["architecture"]) == {"conv_channels", "attention_heads", "ffn_units"}
    # the latency table predicted the exported model's latency and both models were timed at export
    assert 0 < pruned["latency"]["predicted_latency_ratio"] <= 1.0 + 1e-6 and pruned["latency"]["measured_speedup"] > 0
    assert "latency" not in dense
    assert os.path.getsize(tmp_path / "results" / "study" / "architecture" / f"{pruned['name']}.png") > 0
    low, high = pruned["wer_vs_dense_ci"]
    assert low <= pruned["wer_vs_dense"] <= high
    assert os.path.exists(tmp_path / "assets" / "slurp_dense_s1.pt")  # the teacher, weights only
    teacher = torch.load(tmp_path / "assets" / "slurp_dense_s1.pt", weights_only=False)
    assert teacher["last_optimizer_state"] is None and teacher["study_model"]["row"] == "slurp_dense_s1"
    curve = json.load(open(tmp_path / "results" / "study" / "curves" / "slurp_dense_s1.json"))
    assert [p["update"] for p in curve] == sorted(p["update"] for p in curve) and curve[-1]["update"] == 24
    assert "| HJ-Pruning-MAC 0.5, distill layers, from ssl | 1 |" in open(tmp_path / "results" / "study.md").read()
    # pruned from the self-supervised model: beside it, the dense run's best dev by the same number of updates
    assert pruned["dense_best_dev_by_then"] == min(p["wer_in_budget"] for p in curve if p["update"] <= 24)
    assert "the dense run's best by the same updates" in open(tmp_path / "results" / "study.md").read()

    # a second call finds every row done: nothing runs
    assert study.run_study(tiny_study(), jobs=2) == []
    # a corrupt row is named and run again; the others are reused
    counts = tmp_path / "results" / "study" / "utterances" / "slurp_dense_s2.tsv"
    counts.write_text("garbage\n")
    capsys.readouterr()
    again = study.run_study(tiny_study(), jobs=1)
    out = capsys.readouterr().out
    assert f"row slurp_dense_s2 cannot be reused and runs again: {counts}:1" in out
    assert [r["name"] for r in again] == ["slurp_dense_s2"]
    names = [r["name"] for r in json.load(open(tmp_path / "results" / "study.json"))["rows"]]
    assert names == [r.name for r in ROWS]  # replaced, not counted twice


@pytest.mark.slow
def test_an_unreadable_checkpoint_last_is_set_aside_and_the_run_starts_again(tiny_study, tmp_path, capsys):
    save = tmp_path / "work" / "runs" / "slurp_dense_s1"
    save.mkdir(parents=True)
    (save / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 truncated")
    s = tiny_study()
    s.run(ROWS[0])
    out = capsys.readouterr().out
    assert f"{save}/checkpoint_last.pt: not a readable fairseq checkpoint" in out
    assert f"no readable checkpoint in {save}: the run starts again" in out
    aside = [p for p in os.listdir(tmp_path / "work" / "runs") if p.startswith("slurp_dense_s1.unreadable-")]
    assert len(aside) == 1 and any(n.startswith("checkpoint_last.pt.unreadable-")
                                   for n in os.listdir(tmp_path / "work" / "runs" / aside[0]))


@pytest.mark.slow
def test_a_truncated_checkpoint_last_resumes_from_the_newest_epoch_checkpoint(tiny_study, tmp_path, capsys):
    s = tiny_study()
    s.run(ROWS[0])  # 24 updates; epoch checkpoints kept beside checkpoint_last.pt
    save = tmp_path / "work" / "runs" / "slurp_dense_s1"
    epochs = sorted(n for n in os.listdir(save) if n.startswith("checkpoint") and n[10:-3].isdigit())
    assert len(epochs) == 2, os.listdir(save)  # keep_last_epochs=2
    data = (save / "checkpoint_last.pt").read_bytes()
    (save / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])  # as if killed while fairseq copied it
    capsys.readouterr()
    updates = study.set_aside_unreadable(str(save))  # what the checkpoint it resumes from has made
    out = capsys.readouterr().out
    assert f"{save} resumes from {epochs[-1]}" in out
    from fairseq_prune.io.checkpoints import read_checkpoint

    assert 0 < updates == study_files._updates(read_checkpoint(str(save / epochs[-1])))
    assert (save / "checkpoint_last.pt").read_bytes() == (save / epochs[-1]).read_bytes()
    assert any(n.startswith("checkpoint_last.pt.unreadable-") for n in os.listdir(save))


@pytest.mark.slow
def test_a_dense_row_at_an_earlier_cap_continues_from_checkpoint_last(tiny_study, tmp_path, monkeypatch, capsys):
    first = tiny_study().run(ROWS[0])
    assert first["updates"] == 24 and first["stopped"] == "cap"
    save = tmp_path / "work" / "runs" / "slurp_dense_s1"
    results = tmp_path / "results" / "study.json"
    monkeypatch.setattr(study, "DENSE_MAX_UPDATES", 40)  # the plan's cap raised after the row was committed
    capsys.readouterr()
    s = tiny_study()
    assert f"continues from {save}/checkpoint_last.pt to at most 40" in capsys.readouterr().out
    assert "slurp_dense_s1" not in s.done and [r.name for r in study.pending(s, None)][0] == "slurp_dense_s1"
    assert s.needs(ROWS[2])[2] == "the dense rows of slurp"  # pruned rows wait for the continued reference
    s.write()  # another row finishing meanwhile keeps the committed row in study.json
    assert [r["updates"] for r in json.load(open(results))["rows"]] == [24]
    again = s.run(ROWS[0])
    assert again["updates"] == 40 and study_files.set_aside_unreadable(str(save)) == 40
    log = open(save / "train.log").read()
    assert log.count("{'_name': None, 'common':") == 2 and "Loaded checkpoint" in log  # resumed, not restarted
    assert [r["updates"] for r in json.load(open(results))["rows"]] == [40]  # replaced, not counted twice

    monkeypatch.setattr(study, "DENSE_MAX_UPDATES", 60)
    aside = tmp_path / "elsewhere"
    os.replace(save, aside)  # a fresh machine: only the committed files
    capsys.readouterr()
    assert "slurp_dense_s1" in tiny_study().done
    assert f"{save}/checkpoint_last.pt is not on this machine: it stays as committed" in capsys.readouterr().out
    os.replace(aside, save)
    rows = json.load(open(results))
    rows["rows"][0]["stopped"] = "plateau"  # stopped by its own criterion: done whatever the cap
    results.write_text(json.dumps(rows))
    assert "slurp_dense_s1" in tiny_study().done


def test_a_pruned_row_gets_the_longer_dense_runs_updates_at_most_a_sessions_share(tiny_study, monkeypatch):
    """A pruned row waits for both dense rows of its corpus, then trains for the longer one's updates, capped at
    PRUNED_MAX_UPDATES so that it ends inside one session; its target warm-up is a third of that."""
    s = tiny_study()
    pruned = ROWS[2]
    assert s.needs(pruned)[2] == "the dense rows of slurp"
    s.done[ROWS[0].name] = {"updates": 15147}
    assert s.needs(pruned)[2] == "the dense rows of slurp"  # one seed is not enough
    s.done[ROWS[1].name] = {"updates": 16929}
    updates, teacher, waits = s.needs(pruned)
    assert (updates, waits) == (study_plan.PRUNED_MAX_UPDATES, "") and teacher.endswith("slurp_dense_s1.pt")
    assert f"criterion.target_warmup_updates={updates // 3}" in study_plan.overrides(pruned, updates, teacher)
    monkeypatch.setattr(study, "PRUNED_MAX_UPDATES", 20000)  # below the cap: the longer dense run's updates
    assert s.needs(pruned)[0] == 16929
    # every pruned row also waits for a latency table that fits the model, and names the command that makes it
    latency = Row("slurp", "HJ-Pruning-latency", 1, (0.5,), "layers", "dense")
    assert s.needs(latency)[2] == ""
    table = json.load(open(s.latency_table))
    os.remove(s.latency_table)
    fresh = tiny_study()
    fresh.done.update(s.done)
    assert fresh.needs(pruned)[2] == fresh.needs(latency)[2] == (
        f"the latency table {s.latency_table} (made by: fairseq-prune-profile assets/pretrained/wav2vec2_mini.pt "
        "assets/study/latency_mini_eager_1thread.json --force --rounds 15)")
    table["architecture"]["ffn_units"] = [7] * len(table["architecture"]["ffn_units"])
    json.dump(table, open(s.latency_table, "w"))
    other = tiny_study()
    other.done.update(s.done)
    assert "a latency table that serves" in other.needs(pruned)[2] and "made for another architecture (ffn_units" \
        in other.needs(pruned)[2]
    o = study_plan.overrides(latency, 9000, "/t.pt", s.latency_table)
    assert "criterion.budget=latency" in o and f"criterion.latency_table={s.latency_table}" in o
    with pytest.raises(ValueError, match="needs the latency table"):
        study_plan.overrides(latency, 9000, "/t.pt")


def test_a_fine_tuning_row_waits_for_its_pruned_rows_model_and_auto_ships_both_protocol_rows(tiny_study,
                                                                                                monkeypatch):
    """The plan's fine-tuning row of an "auto" row: when a protocol row ends, which start wins is not known yet,
    so both protocol rows ship their exported model; the row waits until one of its shipped or exported models
    is on the machine, and says how to get one otherwise."""
    monkeypatch.setattr(study, "rows", study_plan.rows)  # the plan itself (tiny_study's has no such row)
    protocol = study_plan.protocol_rows()
    headline = Row("slurp", "HJ-Pruning-MAC", 2, (0.5,), "layers", "dense")
    assert all(study.Study.is_source(r) for r in protocol) and not study.Study.is_source(headline)
    monkeypatch.setattr(study, "rows", lambda: list(ROWS))
    s = tiny_study()
    ft = Row("slurp", "HJ-Pruning-MAC", 1, (0.5,), "layers", "ssl", finetune=True)
    s.done[ft.source.name] = {"updates": 24}
    assert "neither" in s.needs(ft)[2] and "run that row again" in s.needs(ft)[2]
    os.makedirs(os.path.dirname(s.exported(ft.source)))
    open(s.exported(ft.source), "w").close()
    assert s.needs(ft) == (study.FINETUNE_MAX_UPDATES, None, "")


def test_once_auto_is_decided_the_winning_protocol_row_is_listed_once(tiny_study, monkeypatch):
    """The headline row (auto) of the start that won on dev is that protocol row: the report lists it once."""
    monkeypatch.setattr(study, "rows", study_plan.rows)
    s = tiny_study()
    ssl, dense = study_plan.protocol_rows()
    s.done[ssl.name] = {"best_dev": 2.769, "prune_from": "ssl"}
    s.done[dense.name] = {"best_dev": 2.783, "prune_from": "dense"}
    names = [r.name for r in study.all_rows_resolved(s)]
    assert len(names) == len(set(names)) and ssl.name in names and dense.name in names
    headline = Row("slurp", "HJ-Pruning-MAC", 1, (0.5,), "layers", "auto")
    assert s.resolve(headline)[0].name == ssl.name


def test_the_listing_names_the_checkpoint_an_interrupted_row_resumes_from(tiny_study):
    """--list: a pending row whose run folder holds a checkpoint_last.pt says it resumes from it; a fresh one says
    nothing more, a pruned one what it waits for."""
    s = tiny_study()
    last = os.path.join(s.run_folder(ROWS[0].name), "checkpoint_last.pt")
    os.makedirs(os.path.dirname(last))
    open(last, "wb").close()
    lines = study.listing(s)
    assert lines[0] == f"pending  {ROWS[0].name} (resumes from {last})"
    assert lines[1] == f"pending  {ROWS[1].name}"
    assert lines[2].startswith(f"pending  {ROWS[2].name} (waits for ") and len(lines) == 3


def test_a_run_folder_started_under_another_plan_is_set_aside(tmp_path, capsys):
    save = str(tmp_path / "runs" / "row")
    plan = {"updates": 10000, "overrides": ["criterion.target=0.5"]}
    study_files.same_plan_or_set_aside(save, plan)
    open(os.path.join(save, "checkpoint_last.pt"), "w").close()
    study_files.same_plan_or_set_aside(save, dict(plan))  # the same plan: kept
    assert os.path.exists(os.path.join(save, "checkpoint_last.pt"))
    capsys.readouterr()
    study_files.same_plan_or_set_aside(save, {**plan, "updates": 16929})  # the cap changed
    out = capsys.readouterr().out
    aside = [n for n in os.listdir(tmp_path / "runs") if n.startswith("row.other-plan-")]
    assert len(aside) == 1 and os.path.exists(tmp_path / "runs" / aside[0] / "checkpoint_last.pt")
    assert f"{save} was started under another plan (updates differ): set aside as" in out
    assert os.listdir(save) == ["plan.json"] and json.load(open(os.path.join(save, "plan.json")))["updates"] == 16929


def test_a_row_from_the_ssl_model_is_compared_with_the_dense_curve_by_the_same_updates(tiny_study, tmp_path):
    s = tiny_study()
    curve = [{"update": 1000, "wer_in_budget": 30.0}, {"update": 2000, "wer_in_budget": 20.0},
             {"update": 3000, "wer_in_budget": 21.0}, {"update": 4000, "wer_in_budget": 10.0}]
    path = s.files(ROWS[0].name).curve
    os.makedirs(os.path.dirname(path))
    json.dump(curve, open(path, "w"))
    assert s.dense_dev_by(ROWS[2], 3500) == 20.0 and s.dense_dev_by(ROWS[2], 500) is None
    assert s.dense_dev_by(ROWS[2], 4000) == 10.0


@pytest.mark.slow
def test_a_pruned_model_is_fine_tuned_after_export_from_its_shipped_weights(tiny_study, tmp_path, monkeypatch):
    """A fine-tuning row waits for its pruned row, which then ships its exported model weights-only; the row
    trains that model without gates (CTC, the dense recipe) at the exported sizes, and is reported as such."""
    ft = Row("slurp", "HJ-Pruning-MAC", 1, (0.5,), "layers", "ssl", finetune=True)
    assert ft.source == ROWS[2] and ft.name == ROWS[2].name.replace("_s1", "_ft_s1")
    monkeypatch.setattr(study, "rows", lambda: list(ROWS) + [ft])
    monkeypatch.setattr(study, "FINETUNE_MAX_UPDATES", 16)
    s = tiny_study()
    assert s.needs(ft)[2] == f"the row {ROWS[2].name}"
    finished = study.run_study(s, jobs=2)
    assert [r["name"] for r in finished][-1] == ft.name  # after its source
    saved = {r["name"]: r for r in json.load(open(tmp_path / "results" / "study.json"))["rows"]}
    source, tuned = saved[ROWS[2].name], saved[ft.name]
    shipped = tmp_path / "assets" / f"{ROWS[2].name}.pt"
    state = torch.load(shipped, weights_only=False)
    assert state["last_optimizer_state"] is None and state["study_model"]["row"] == ROWS[2].name
    assert tuned["architecture"] == source["architecture"]
    assert tuned["macs_ratio"] == pytest.approx(source["macs_ratio"])
    assert tuned["finetuned_after_export"] and not source["finetuned_after_export"] and 0 < tuned["updates"] <= 16
    assert f"'w2v_path': '{shipped}'" in open(tmp_path / "work" / "runs" / ft.name / "train.log").read()
    assert "fine-tuned after export" in open(tmp_path / "results" / "study.md").read()


@pytest.mark.slow
def test_the_demo_reproduces_the_shipped_dense_row_and_prunes_it_beside_the_study(tiny_study, tmp_path):
    import argparse

    from experiments import demo_study

    s = tiny_study()
    committed = s.run(ROWS[0])  # the study's dense row, its model shipped to assets/
    references = demo_study.shipped_references(["slurp", "librispeech"], assets=str(tmp_path / "assets"))
    assert references == {"slurp": str(tmp_path / "assets" / "slurp_dense_s1.pt")}  # librispeech: not shipped
    args = argparse.Namespace(work=str(tmp_path / "demo"), results=str(tmp_path / "demo-results"), target=[0.5],
                              updates=8, lr=0.0002, max_tokens=80000, warmup=4, lagrangian_lr=None,
                              lambda_2_init=None, jobs=2, validations=1)
    rows = demo_study.runs(args, s.manifests, references)
    assert [r["method"] for r in rows] == [demo_study.DENSE, demo_study.pruned_label(0.5)]  # the table's order
    dense = rows[0]
    # the shipped model decoded again gives the committed row's numbers
    for key in ("wer", "intent_accuracy", "transcript_wer", "macs", "params"):
        assert dense[key] == pytest.approx(committed[key]), key
    pruned = next(r for r in rows if r["method"] == demo_study.pruned_label(0.5))
    log = open(tmp_path / "demo" / "runs" / "slurp-HJ-Pruning-MAC_0.5_distill-layers-seed1" / "train.log").read()
    assert f"'distill_teacher': '{references['slurp']}'" in log and "'distill_layers': [1, 2]" in log
    assert pruned["updates"] == 8 and pruned["start"].endswith("slurp_dense_s1.pt")
    for r in rows:
        r["macs_ratio"] = r["macs"] / dense["macs"]
    table = demo_study.comparison_table(rows, [committed], [0.5]).splitlines()
    assert table[3].startswith("| slurp | HJ-Pruning-MAC 0.5 distill-layers | ") and "not in the study yet" in table[3]
    ci = committed["transcript_wer_ci"]
    assert f"| {committed['transcript_wer']:.1f} [{ci[0]:.1f}, {ci[1]:.1f}] |" in table[2]  # the study's cells
    with pytest.raises(SystemExit, match="--protocol study does not take --start, --seeds"):
        demo_study.resolve(argparse.Namespace(start="x.pt", prune_from=None, finetune_updates=None, distill=None,
                                              random_init=False, seeds=[1]))


_KILLABLE = """
import sys
from experiments import study
from experiments.study_plan import Row
study.PRETRAINED_MODEL = sys.argv[1]
study.DENSE_MAX_UPDATES = 400
s = study.Study(sys.argv[2], {"slurp": sys.argv[3]}, results=sys.argv[4], assets=sys.argv[5])
s.run(Row("slurp", "dense", 1))
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_from_checkpoint_last(tiny_study, tmp_path, small_w2v):
    data = str(tmp_path / "data")
    tiny_study()  # writes the corpus
    args = [small_w2v, str(tmp_path / "work"), data, str(tmp_path / "results"), str(tmp_path / "assets")]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    p = subprocess.Popen([sys.executable, "-c", _KILLABLE, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    save = tmp_path / "work" / "runs" / "slurp_dense_s1"
    deadline = time.monotonic() + 300
    while not (save / "checkpoint_last.pt").exists():
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)  # the study only, as at the end of a session: its child must not outlive it
    p.wait()
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", str(save)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "fairseq-hydra-train outlived the study"
        time.sleep(0.2)
    row = study.Study(*args[1:2], {"slurp": data}, results=args[3], assets=args[4])
    study.DENSE_MAX_UPDATES, before = 40, study.DENSE_MAX_UPDATES
    try:
        result = row.run(Row("slurp", "dense", 1))
    finally:
        study.DENSE_MAX_UPDATES = before
    log = open(tmp_path / "work" / "runs" / "slurp_dense_s1" / "train.log").read()
    assert "Loaded checkpoint" in log  # resumed, not restarted
    assert log.count("{'_name': None, 'common':") == 2  # the killed invocation's lines were kept, as they came
    assert result["updates"] == 40
    assert result["minutes"] >= study_files.logged_wall_minutes(study_files.training_log(str(save))) - 0.05
    # run again at its target: not trained one update further (fairseq resumed at max_update still makes one)
    again = row.run(Row("slurp", "dense", 1))
    assert again["updates"] == 40 and study_files.set_aside_unreadable(str(save)) == 40


def test_logged_minutes_count_every_invocation_by_its_timestamps(tmp_path):
    """fairseq logs ``"wall": "0"`` in a run resumed mid-epoch: the minutes come from the lines' timestamps, every
    invocation's, less a pause (SIGSTOP: no line for longer than PAUSE_MINUTES)."""
    cfg = "[2026-12-07 10:00:00,000][fairseq_cli.train][INFO] - {'_name': None, 'common': {}}\n"
    line = '[2026-12-07 {}:00,500][train][INFO] - {{"wall": "{}"}}\n'
    log = tmp_path / "hydra_train.log"
    log.write_text(cfg + "".join(line.format(f"10:{m:02d}", m * 60) for m in range(5, 35, 5)) + "no timestamp\n"
                   + line.format("11:10", 0) + line.format("11:15", 0)  # held 40 minutes by SIGSTOP, then 5 more
                   + cfg.replace("10:00", "12:00")  # killed, resumed an hour later
                   + line.format("12:08", 0) + line.format("12:12", 0))
    assert study_files.logged_wall_minutes(str(log)) == pytest.approx(30.0 + 5.0 + 12.0)
    assert study_files.logged_wall_minutes(str(tmp_path / "none.log")) == 0.0


def test_paired_interval_uses_the_same_utterances():
    rng = np.random.default_rng(0)
    ids = list(range(200))
    a = np.stack([rng.integers(0, 3, 200), np.full(200, 10), rng.integers(0, 3, 200), np.full(200, 9),
                  rng.integers(0, 2, 200), np.ones(200, int)], 1)
    b = a.copy()
    b[:, 0] += 1  # one more error in every utterance: WER +10 points exactly
    value, (low, high) = bootstrap.paired_interval((ids, b), (ids, a), "wer")
    assert value == pytest.approx(10.0) and low == pytest.approx(10.0) and high == pytest.approx(10.0)
    v, (lo, hi) = bootstrap.interval(a, "wer")
    assert lo < v < hi and hi - lo < 10
    with pytest.raises(ValueError, match="same utterances"):
        bootstrap.paired_interval((ids, a), (ids[::-1], a), "wer")


def test_the_report_prints_predicted_and_measured_latency_beside_the_speedup():
    from experiments.study_report import study_markdown
    row = {"name": "librispeech_HJ-Pruning-latency_0.5_layers_from-ssl_s1", "corpus": "librispeech",
           "method": "HJ-Pruning-latency", "target": [0.5], "seed": 1, "distill": "layers", "prune_from": "ssl",
           "macs_ratio": 0.43, "wer": 9.8, "wer_ci": [8.9, 10.7], "wer_vs_dense": 0.5,
           "wer_vs_dense_ci": [0.1, 0.9], "updates": 10000, "minutes": 120.0,
           "latency": {"predicted_latency_ratio": 0.5012, "measured_latency_ratio": 0.5231, "measured_speedup": 1.91}}
    untimed = {**row, "name": "x", "latency": {"predicted_latency_ratio": 0.5012}}
    lines = study_markdown([row, untimed]).splitlines()
    assert "| HJ-Pruning-latency 0.5, distill layers, from ssl | 1 | 0.43 | 0.50 / 0.52 | 1.91x | 9.8 [8.9, 10.7] | " \
        "+0.5 [+0.1, +0.9] | 10000 | 120 |" in lines
    assert any("| 0.43 | 0.50 / – | – |" in line for line in lines)


def test_pruned_rows_are_compared_with_the_small_dense_control_on_the_same_utterances(tiny_study):
    """A pruned row at the control's MACs gets paired differences against it (here one error fewer in every
    utterance: exactly -10 WER points); a costlier pruned row and the dense rows are not compared."""
    s = tiny_study()
    ids = list(range(50))
    control = np.tile([2, 10, 2, 10, 1, 1], (50, 1))
    better = control.copy()
    better[:, [0, 2]] -= 1
    rows = [{"name": "slurp_dense_s1", "corpus": "slurp", "method": "dense", "macs_ratio": 1.0},
            {"name": "slurp_small-dense_s1", "corpus": "slurp", "method": "small-dense", "macs_ratio": 0.50},
            {"name": "slurp_HJ-Pruning-MAC_0.5_layers_from-ssl_s1", "corpus": "slurp", "method": "HJ-Pruning-MAC",
             "macs_ratio": 0.51},
            {"name": "slurp_HJ-Pruning-MAC_0.7_layers_from-ssl_s1", "corpus": "slurp", "method": "HJ-Pruning-MAC",
             "macs_ratio": 0.70}]
    for r, counts in zip(rows[1:], (control, better, better)):
        study_files.write_counts(s.files(r["name"]).counts, ids, counts)
    (only,) = study_report.against_control(rows, s.counts)
    assert only["name"] == rows[2]["name"] and only["control"] == "slurp_small-dense_s1"
    assert only["transcript_wer"] == pytest.approx(-10.0) and only["transcript_wer_ci"] == pytest.approx([-10, -10])
    assert only["intent_accuracy"] == pytest.approx(0.0)
    for r in rows:
        r.update(seed=1, target=None, distill="layers", prune_from="ssl", updates=1, minutes=1.0)
    text = study_report.study_markdown(rows, [only])
    assert "| HJ-Pruning-MAC, distill layers, from ssl | 1 | +0.0 [+0.0, +0.0] | -10.0 [-10.0, -10.0] |" in text
    study_files.write_counts(s.files(rows[1]["name"]).counts, list(range(1, 51)), control)
    with pytest.raises(ValueError, match="same utterances"):  # a control decoded on other utterances is refused
        study_report.against_control(rows, s.counts)


def test_plan_rows_and_overrides():
    rows = study_plan.rows()
    names = [r.name for r in rows]
    assert len(names) == len(set(names))
    assert names[:4] == ["slurp_dense_s1", "slurp_dense_s2", "librispeech_dense_s1", "librispeech_dense_s2"]
    headline = [r for r in rows if r.method == "HJ-Pruning-MAC" and r.target in ((0.5,), (0.7,))
                and r.prune_from == "auto" and not r.finetune]
    assert len(headline) == 2 * 2 * 2 * 2  # corpora x targets x distillation x seeds
    tuned = [r for r in rows if r.finetune]  # the headline model fine-tuned after export, per corpus
    sources = [Row(c, "HJ-Pruning-MAC", 1, (0.5,), "layers", "auto") for c in study_plan.CORPORA]
    assert [r.source for r in tuned] == sources
    assert all(rows.index(r) > rows.index(r.source) for r in tuned)
    o = study_plan.overrides(tuned[0], 5000, None)
    assert "optimization.lr=[0.0001]" in o and "optimization.stop_min_lr=1.25e-05" in o
    assert not any(x.startswith("criterion.") for x in o)
    o = study_plan.overrides(Row("slurp", "HJ-Pruning-MAC", 2, (0.5,), "layers", "dense"), 9000, "/t.pt")
    assert "criterion.target_warmup_updates=3000" in o and "criterion.distill_layers=[2,4,6]" in o
    assert "optimizer.groups.default.lr_float=0.0002" in o and "criterion.distill_teacher=/t.pt" in o
    o = study_plan.overrides(Row("slurp", "HJ-Pruning-MAC", 1, (0.5,), "none", "ssl"), 9000, "/t.pt")
    assert not any("distill" in x for x in o) and "optimizer.groups.default.lr_float=0.0005" in o
    assert study_plan.overrides(Row("librispeech", "dense", 1), 12000, None)[-1] == "optimization.lr=[0.0005]"
