"""Latency budget vs MAC budget at the same target, predicted and measured, side by side (issue #25's bench rows).

For each size (``mini``: the shipped 6 x 8 x 32 shape; ``base``: wav2vec2-base), profiles a latency table of the
dense architecture on this machine (fairseq-prune-profile's code), then builds two exported models at the same
target: ``macs`` keeps units until the exact MACs are the target share of the dense model's (as
bench_inference.py), ``latency`` until the table's predicted time is; both with the same random per-layer pattern
and random gates (speed does not depend on the weights). Each is timed beside the dense model (fairseq-prune-latency's
code: interleaved rounds, medians), with the part-by-part breakdown. Prints the rows and writes them in the format
of ``docs/results/latency.json``.

This measures what each budget's *allocation* buys in time on this device; which one keeps more accuracy needs
training (the study's latency rows).

    python benchmarks/bench_latency.py [--sizes mini base] [--target 0.5] [--json results/latency.json]
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List

import torch

from experiments.checkpoints import wav2vec2_pretraining_cfg, write_wav2vec2_checkpoint
from experiments.common import MINI_W2V
from fairseq_prune.cli import latency_check, profile
from fairseq_prune.export.prune import prune
from fairseq_prune.latency import LatencyTable
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning

from bench_inference import ALL_GATES, VOCAB, counts_for_budget, keep_counts, set_gates

SHAPES = {"mini": MINI_W2V, "base": {}}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SHAPES), default=["mini", "base"])
    p.add_argument("--target", type=float, default=0.5, help="share of the dense MACs / predicted latency")
    p.add_argument("--pattern", choices=("uniform", "uneven"), default="uneven")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--grid", type=int, default=5, help="profile grid points per size axis")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", help="write the rows there")
    return p


def counts_for_latency(model: Wav2Vec2CtcPruning, table: LatencyTable, target: float, pattern: str, seed: int):
    """Bisection on the average share so that the predicted latency is ``target`` of the dense model's."""
    dense = float(table.predict(model.shape().sizes))
    floor = float(table.predict(keep_counts(model, 0.0, pattern, seed))) / dense
    if floor > target:  # the time no gate removes (conv layer 0's input, positional conv, norms, glue)
        raise ValueError(f"a predicted latency of {target:g} of the dense model's is below what no gate removes "
                         f"({floor:.3f} in this table)")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        ratio = float(table.predict(keep_counts(model, mid, pattern, seed))) / dense
        lo, hi = (mid, hi) if ratio < target else (lo, mid)
    return keep_counts(model, hi, pattern, seed)


def profile_table(overrides: Dict, folder: str, args: argparse.Namespace) -> LatencyTable:
    ckpt, out = os.path.join(folder, "dense.pt"), os.path.join(folder, "table.json")
    write_wav2vec2_checkpoint(ckpt, overrides, seed=0)
    profile.main(profile.get_parser().parse_args([ckpt, out, "--grid", str(args.grid), "--rounds", "5", "--threads",
                                                  str(args.threads), "--seconds", str(args.seconds), "--force"]))
    return LatencyTable.load(out)


def rows_for(size: str, args: argparse.Namespace) -> List[Dict]:
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.time()
        table = profile_table(SHAPES[size], folder, args)
        print(f"{size}: profiled in {(time.time() - t0) / 60:.2f} min", flush=True)
    torch.manual_seed(0)
    w2v_args = wav2vec2_pretraining_cfg(SHAPES[size])
    dense = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, VOCAB).eval()
    rows = []
    for budget in ("macs", "latency"):
        gated = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, VOCAB, **ALL_GATES).eval()
        try:
            counts = (counts_for_budget(gated, args.target, args.pattern, seed=1) if budget == "macs"
                      else counts_for_latency(gated, table, args.target, args.pattern, seed=1))
        except ValueError as e:
            print(f"{size} {budget} {args.target:g}: skipped: {e}", flush=True)
            continue
        set_gates(gated, counts, seed=2)
        exported = prune(gated, gated.cfg).model.eval()
        row = {"size": size, "budget": budget, "target": args.target,
               **latency_check.check_model(table, dense, exported, args.rounds, breakdown=True),
               "command": " ".join(["python benchmarks/bench_latency.py", *sys.argv[1:]])}
        latency_check.print_row(f"{size} {budget} {args.target:g}", row)
        rows.append(row)
    return rows


def main(args: argparse.Namespace) -> List[Dict]:
    rows = [row for size in args.sizes for row in rows_for(size, args)]
    print(f"\n{'size':<6} {'budget':<8} {'MACs':>6} {'pred. lat.':>10} {'meas. lat.':>10} {'speed-up':>9}")
    for r in rows:
        print(f"{r['size']:<6} {r['budget']:<8} {r['macs_ratio']:>6.3f} {r['predicted_latency_ratio']:>10.3f} "
              f"{r['measured_latency_ratio']:>10.3f} {r['measured_speedup']:>8.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        latency_check.write_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
