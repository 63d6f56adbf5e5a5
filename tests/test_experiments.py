"""The experiments package (experiments/): protocols, tables, the plot, timing, checkpoints for tests and
benchmarks; and how the scripts and benchmarks reach it (imports, no sys.path edits)."""
import argparse
import ast
import importlib.util
import os

import pytest
import torch

from experiments import report
from experiments.checkpoints import is_finetuned, random_init_model
from experiments.common import REPO, START_DICT, START_MODEL
from experiments.corpora import match_start_dictionary
from experiments.protocols import PROTOCOLS, add_pruning_args, pruning_overrides, resolve_protocol
from experiments.runner import run_name
from experiments.timing import time_models

SCRIPTS = ["scripts/demo.py", "scripts/study.py", "scripts/make_start_model.py", "scripts/make_pretrained_model.py",
           "benchmarks/bench_inference.py", "benchmarks/bench_training.py"]


def row(corpus, method, seed, wer, intent=None, speedup=None, macs_ratio=1.0):
    r = {"corpus": corpus, "method": method, "seed": seed, "params": 3_730_000 if method == "dense" else 2_380_000,
         "macs": 3_800_000_000 if method == "dense" else 1_940_000_000, "wer": wer + 2,
         "transcript_wer": wer if intent is not None else None, "intent_accuracy": intent,
         "checkpoint": os.path.join(REPO, "work", "runs", f"{corpus}-{method}-{seed}.pt"), "macs_ratio": macs_ratio}
    if speedup is not None:
        r["speedup"] = speedup
    return r


ROWS = [row("librispeech", "dense", 1, 32.7), row("librispeech", "HJ-MAC", 1, 36.8, speedup=1.62, macs_ratio=0.51),
        row("slurp", "dense", 1, 15.9, 93.2), row("slurp", "dense", 2, 16.3, 92.0),
        row("slurp", "HJ-MAC", 1, 18.3, 82.4, 1.67, 0.51), row("slurp", "HJ-MAC", 2, 18.1, 84.0, 1.60, 0.49)]


def test_resolve_protocol_fills_only_what_the_command_line_left_out():
    args = argparse.Namespace(protocol="paper", start=None, updates=99, seeds=None, lr=None, target=None,
                              prune_from=None, finetune_updates=None, distill=None)
    resolve_protocol(args)
    assert args.updates == 99 and args.seeds == PROTOCOLS["paper"]["seeds"] and args.start == PROTOCOLS["paper"]["start"]
    study = argparse.Namespace(protocol="finetuned", start=None, updates=None)  # no --target: left alone
    resolve_protocol(study)
    assert not hasattr(study, "target") and study.updates == PROTOCOLS["finetuned"]["updates"]
    assert {"start", "prune_from", "updates", "lr", "target", "warmup", "finetune_updates", "seeds", "distill"} <= set(
        PROTOCOLS["finetuned"])


def test_pruning_overrides():
    p = argparse.ArgumentParser()
    add_pruning_args(p)
    assert pruning_overrides(p.parse_args([])) == []  # the recipe's warm-up
    args = resolve_protocol(argparse.Namespace(**vars(p.parse_args([])), protocol="finetuned"))
    assert pruning_overrides(args) == [f"criterion.target_warmup_updates={PROTOCOLS['finetuned']['warmup']}"]
    assert pruning_overrides(p.parse_args(["--warmup", "10", "--lagrangian-lr", "5", "--lambda-2-init", "0"])) == [
        "criterion.target_warmup_updates=10", "optimizer.groups.lagrangian.lr_float=5.0", "criterion.lambda_2_init=0.0"]


def test_demo_table_means_over_seeds():
    md = report.demo_table(report.summarise_seeds(ROWS))
    assert md.splitlines() == [
        "| corpus | method | params (M) | GMACs (10 s) | MACs vs dense | WER (test) | intent acc. (test) | CPU speed-up |",
        "|---|---|---|---|---|---|---|---|",
        "| librispeech | dense | 3.73 | 3.80 | 1.00 | 34.7 | – | 1.00× (reference) |",
        "| librispeech | HJ-MAC | 2.38 | 1.94 | 0.51 | 38.8 | – | 1.62× |",
        "| slurp | dense | 3.73 | 3.80 | 1.00 | 16.1 (15.9 / 16.3) | 92.6 (93.2 / 92.0) | 1.00× (reference) |",
        "| slurp | HJ-MAC | 2.38 | 1.94 | 0.50 | 18.2 (18.3 / 18.1) | 83.2 (82.4 / 84.0) | 1.64× (1.67× / 1.60×) |",
    ]


def test_summarise_seeds_keeps_each_seed():
    slurp = report.summarise_seeds(ROWS)[2]
    assert slurp["seeds"] == [1, 2] and slurp["wer_per_seed"] == [17.9, 18.3]
    assert slurp["runs"] == ["work/runs/slurp-dense-1.pt", "work/runs/slurp-dense-2.pt"]
    assert "speedup" not in slurp and "transcript_wer" in slurp


def test_study_table():
    assert report.study_table(ROWS[1:3]).splitlines() == [
        "| corpus | method | params (M) | GMACs (10 s) | WER (test) | intent acc. (test) |", "|---|---|---|---|---|---|",
        "| librispeech | HJ-MAC | 2.38 | 1.94 | 38.8 | – |", "| slurp | dense | 3.73 | 3.80 | 15.9 | 93.2 |"]


@pytest.mark.parametrize("by_target", [False, True])
def test_plot(tmp_path, by_target):
    rows = report.summarise_seeds(ROWS) if not by_target else ROWS
    path = tmp_path / "plot.png"
    report.plot_accuracy_vs_gmacs(rows, str(path), by_target=by_target)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_models_interleaves_and_warms_up():
    calls = []
    medians = time_models({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b"] * 4 and set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())


def test_run_name():
    assert run_name("slurp", "HJ-SepSize 0.3/0.5") == "slurp-HJ-SepSize_0.3-0.5"
    assert run_name("librispeech", "dense", seed=2) == "librispeech-dense-seed2"


def test_match_start_dictionary(tmp_path):
    folders = {c: tmp_path / c for c in ("librispeech", "slurp")}
    for f in folders.values():
        f.mkdir()
        (f / "dict.ltr.txt").write_text("A 1\n")
    match_start_dictionary({c: str(f) for c, f in folders.items()}, str(tmp_path / "pretrained.pt"))
    assert (folders["slurp"] / "dict.ltr.txt").read_text() == "A 1\n"  # a pre-trained start: the corpus's own
    if os.path.exists(START_DICT):
        match_start_dictionary({c: str(f) for c, f in folders.items()}, START_MODEL)
        with open(START_DICT) as f:
            assert (folders["slurp"] / "dict.ltr.txt").read_text() == f.read()


def test_random_init_model(small_w2v, tmp_path):
    """A randomly initialised checkpoint of a start model's shape (written once), not a fine-tuned one."""
    from fairseq_prune.io.checkpoints import read_checkpoint

    path = random_init_model(small_w2v, str(tmp_path), seed=3)
    assert path == random_init_model(small_w2v, str(tmp_path), seed=3)
    assert not is_finetuned(path)
    start, made = read_checkpoint(small_w2v), read_checkpoint(path)
    assert made["cfg"].model == start["cfg"].model
    assert not all((made["model"][k] == v).all() for k, v in start["model"].items())


def _imports(path: str):
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_scripts_reach_experiments_by_import():
    """No sys.path edits in scripts/ and benchmarks/; experiments/ imports neither."""
    for path in SCRIPTS:
        with open(os.path.join(REPO, path)) as f:
            assert "sys.path" not in f.read(), path
    package = [os.path.join("experiments", n) for n in os.listdir(os.path.join(REPO, "experiments"))
               if n.endswith(".py")]
    for path in package:
        for name in _imports(path):
            assert name.split(".")[0] not in ("benchmarks", "scripts", "mini", "bench_inference", "bench_training"), (
                path, name)


@pytest.mark.parametrize("path", SCRIPTS)
def test_script_parsers(path):
    """Every script builds its parser apart from main() and parses its defaults."""
    spec = importlib.util.spec_from_file_location("script_" + os.path.basename(path)[:-3], os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)
    assert isinstance(module.get_parser().parse_args([]), argparse.Namespace)


def test_one_definition_of_the_mini_shape():
    """experiments.common.MINI_W2V is what the pre-training recipe writes and what the shipped start model holds;
    the small dense control has half its MACs."""
    import yaml

    from experiments.common import MINI_W2V, SMALL_DENSE_W2V
    from fairseq_prune.cost import REFERENCE_SAMPLES, Wav2Vec2Shape, cost_breakdown, totals

    recipe = yaml.safe_load(open(os.path.join(REPO, "examples", "mini", "pretraining.yaml")))["model"]
    assert {k: recipe[k] for k in MINI_W2V} == MINI_W2V
    shipped = torch.load(os.path.join(REPO, "assets", "start_model", "wav2vec_ctc_mini.pt"), weights_only=False)
    w2v = shipped["cfg"]["model"]["w2v_args"]["model"]
    assert {k: w2v[k] for k in MINI_W2V} == MINI_W2V

    def macs(fields):
        from omegaconf import OmegaConf
        from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

        c = OmegaConf.merge(OmegaConf.structured(Wav2Vec2Config()), fields)
        return float(totals(cost_breakdown(Wav2Vec2Shape.from_w2v_cfg(c), REFERENCE_SAMPLES))["total"].macs)

    assert macs(SMALL_DENSE_W2V) / macs(MINI_W2V) == pytest.approx(0.5, abs=0.01)
