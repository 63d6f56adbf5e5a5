"""Inference speed of exported (physically pruned) wav2vec2-base models vs the dense model, side by side.

Builds a wav2vec2-base CTC model with gates (random weights: speed does not depend on them), sets its gates so
that the deterministic masks keep a given share of the MACs (at 10 s), exports it with fairseq-prune's export
code, and times all models on the same input in interleaved rounds (dense, pruned A, pruned B, ..., again),
reporting medians: speed-up = t_dense / t_pruned, MAC ratio = MACs_pruned / MACs_dense, and
efficiency = speed-up * MAC ratio (1.0: time shrinks exactly like MACs).

    python benchmarks/bench_inference.py [--targets 0.7 0.5 0.35] [--batch-sizes 1 8] [--threads 1 2]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

from fairseq_prune.checkpoints import wav2vec2_pretraining_cfg
from fairseq_prune.cost import REFERENCE_SAMPLES, StructureCounts, cost_breakdown, totals
from fairseq_prune.export import prune
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning

VOCAB = 32
ALL_GATES = dict(prune_conv_channels=True, prune_attention_heads=True, prune_ffn_units=True, feature_grad_mult=1.0)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.5, 0.35], help="MAC ratios to prune to")
    p.add_argument("--patterns", nargs="+", default=["uniform", "uneven"], choices=["uniform", "uneven"],
                   help="uniform: every structure keeps the same share; uneven: per-layer shares vary")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per setting (median)")
    p.add_argument("--seconds", type=float, default=10.0, help="input length")
    p.add_argument("--round-to", type=int, default=8, help="export --round-to (hardware-friendly sizes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here")
    return p


def keep_counts(model: Wav2Vec2CtcPruning, share: float, pattern: str, seed: int) -> StructureCounts:
    """Per-structure unit counts keeping about ``share`` of every structure (uneven: per-layer jitter)."""
    g = torch.Generator().manual_seed(seed)
    shape = model.shape()

    def jitter(n: int) -> List[float]:
        if pattern == "uniform":
            return [1.0] * n
        return (0.5 + torch.rand(n, generator=g)).tolist()  # 0.5x .. 1.5x the average share

    def count(full: int, s: float, lowest: int) -> int:
        return max(lowest, min(full, int(round(full * s))))

    cj, hj, fj = jitter(len(shape.conv_channels)), jitter(len(shape.heads)), jitter(len(shape.ffn_units))
    return StructureCounts(
        conv=[count(c, share * j, 1) for c, j in zip(shape.conv_channels, cj)],
        heads=[count(h, share * j, 0) for h, j in zip(shape.heads, hj)],
        ffn=[count(u, share * j, 0) for u, j in zip(shape.ffn_units, fj)],
    )


def counts_for_budget(model: Wav2Vec2CtcPruning, target: float, pattern: str, seed: int) -> StructureCounts:
    """Bisection on the average share so that the exact MACs at 10 s are ``target`` of the dense model's."""
    shape = model.shape()
    dense = totals(cost_breakdown(shape, REFERENCE_SAMPLES))["total"].macs
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        macs = totals(cost_breakdown(shape, REFERENCE_SAMPLES, keep_counts(model, mid, pattern, seed)))["total"].macs
        lo, hi = (mid, hi) if macs / dense < target else (lo, mid)
    return keep_counts(model, hi, pattern, seed)


def set_gates(model: Wav2Vec2CtcPruning, counts: StructureCounts, seed: int) -> None:
    """Open exactly ``counts`` randomly chosen units of every structure (log alpha +10), close the rest (-10)."""
    g = torch.Generator().manual_seed(seed)
    w2v = model.w2v_model

    def apply(gate, n_keep):
        la = torch.full((gate.n,), -10.0)
        la[torch.randperm(gate.n, generator=g)[:n_keep]] = 10.0
        with torch.no_grad():
            gate.log_alpha.copy_(la)

    for gate, n in zip(w2v.conv_gates(), counts.conv):
        apply(gate, n)
    for layer, h, u in zip(w2v.encoder_layers(), counts.heads, counts.ffn):
        apply(layer.head_gate, h)
        apply(layer.ffn_unit_gate, u)


def time_models(models: Dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> Dict[str, float]:
    """Median seconds per forward, models interleaved within each round (machine noise hits all alike)."""
    times = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(source=x, padding_mask=None)
        for _ in range(rounds):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(source=x, padding_mask=None)
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(args: argparse.Namespace) -> List[Dict]:
    torch.manual_seed(0)
    w2v_args = wav2vec2_pretraining_cfg({})  # fairseq's Wav2Vec2Config defaults: wav2vec2-base
    dense = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, VOCAB).eval()
    dense_macs = totals(cost_breakdown(dense.shape(), REFERENCE_SAMPLES))["total"].macs
    models = {"dense": dense}
    info = {"dense": {"macs": dense_macs, "params": sum(p.numel() for p in dense.parameters())}}
    for pattern in args.patterns:
        for target in args.targets:
            gated = Wav2Vec2CtcPruning.from_w2v_args(w2v_args, VOCAB, **ALL_GATES).eval()
            gated.load_state_dict(dense.state_dict(), strict=False)
            set_gates(gated, counts_for_budget(gated, target, pattern, seed=1), seed=2)
            exported = prune(gated, gated.cfg, round_to=args.round_to).model.eval()
            name = f"{pattern}-{target:g}"
            shape = exported.shape()
            macs = totals(cost_breakdown(shape, REFERENCE_SAMPLES))["total"].macs
            models[name] = exported
            info[name] = {"macs": macs, "params": sum(p.numel() for p in exported.parameters()),
                          "conv_channels": list(shape.conv_channels), "heads": list(shape.heads),
                          "ffn_units": list(shape.ffn_units)}
            del gated
    for m in models.values():
        m.to(args.device)

    rows = []
    samples = int(args.seconds * 16000)
    print(f"device {args.device}, input {args.seconds:g} s, export --round-to {args.round_to}, "
          f"{args.rounds} interleaved rounds, medians")
    print(f"{'model':<14}{'batch':>6}{'threads':>8}{'ms':>10}{'speed-up':>10}{'MAC ratio':>11}{'efficiency':>11}")
    for bs in args.batch_sizes:
        for threads in args.threads:
            torch.set_num_threads(threads)
            x = torch.randn(bs, samples, device=args.device)
            t = time_models(models, x, args.rounds)
            for name in models:
                speedup = t["dense"] / t[name]
                ratio = info[name]["macs"] / dense_macs
                row = {"model": name, "batch": bs, "threads": threads, "seconds": t[name], "speedup": speedup,
                       "mac_ratio": ratio, "efficiency": speedup * ratio}
                rows.append(row)
                print(f"{name:<14}{bs:>6}{threads:>8}{t[name] * 1000:>10.0f}{speedup:>10.2f}{ratio:>11.3f}"
                      f"{speedup * ratio:>11.2f}")
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "models": info, "torch": torch.__version__, "device": args.device}, f, indent=1)
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
