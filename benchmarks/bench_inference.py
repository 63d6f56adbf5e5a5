"""Inference speed of exported (physically pruned) wav2vec2-base models vs the dense model, side by side.

Builds a wav2vec2-base CTC model with gates (random weights: speed does not depend on them), sets its gates so
that the deterministic masks keep a given share of the MACs (at 10 s), exports it with fairseq-prune's export
code, and times all models on the same input in interleaved rounds (dense, pruned A, pruned B, ..., again),
reporting medians: speed-up = t_dense / t_pruned, MAC ratio = MACs_pruned / MACs_dense, and
efficiency = speed-up * MAC ratio (1.0: time shrinks exactly like MACs).

With onnxruntime installed, the models named by ``--onnx-models`` (default: the dense model and both patterns at
0.5) are also written to ONNX by fairseq-prune-onnx's code (logits out, no padding-mask input, checked against
PyTorch) and timed by onnxruntime in the same interleaved rounds; their rows give the speed-up over the same
model in eager PyTorch and over the dense model in onnxruntime. ``--int8`` adds onnxruntime's dynamic int8
quantisation of the same files (MatMul/Gemm weights in int8, activations quantised per call; the CNN stays float;
not checked for equality: its largest difference to the float model is printed).

    python benchmarks/bench_inference.py [--targets 0.7 0.5 0.35] [--batch-sizes 1 8] [--threads 1 2]
"""
import argparse
import json
import logging
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List

import torch

from experiments.checkpoints import wav2vec2_pretraining_cfg
from experiments.timing import time_models
from fairseq_prune.cost import REFERENCE_SAMPLES, cost_breakdown, totals
from fairseq_prune.export.prune import prune
from fairseq_prune.inference.allocator import reuse_freed_memory
from fairseq_prune.layer_sizes import LayerSizes
from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning
from fairseq_prune.onnx.runtime import import_onnxruntime, ort_session

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
    p.add_argument("--onnx-models", nargs="*", default=None,
                   help="models also timed with onnxruntime (default: dense and the 0.5 ones; none: skip; needs "
                   "pip install -e '.[onnx]')")
    p.add_argument("--int8", action="store_true", help="also time onnxruntime's dynamic int8 quantisation of them")
    p.add_argument("--json", help="write the results here")
    return p


def keep_counts(model: Wav2Vec2CtcPruning, share: float, pattern: str, seed: int) -> LayerSizes:
    """Per-structure unit counts keeping about ``share`` of every structure (uneven: per-layer jitter)."""
    g = torch.Generator().manual_seed(seed)
    sizes = model.shape().sizes

    def jitter(n: int) -> List[float]:
        if pattern == "uniform":
            return [1.0] * n
        return (0.5 + torch.rand(n, generator=g)).tolist()  # 0.5x .. 1.5x the average share

    def count(full: int, s: float, lowest: int) -> int:
        return max(lowest, min(full, int(round(full * s))))

    cj, hj, fj = (jitter(len(sizes.conv_channels)), jitter(len(sizes.attention_heads)),
                  jitter(len(sizes.ffn_units)))
    return LayerSizes(
        conv_channels=[count(c, share * j, 1) for c, j in zip(sizes.conv_channels, cj)],
        attention_heads=[count(h, share * j, 0) for h, j in zip(sizes.attention_heads, hj)],
        ffn_units=[count(u, share * j, 0) for u, j in zip(sizes.ffn_units, fj)],
    )


def counts_for_budget(model: Wav2Vec2CtcPruning, target: float, pattern: str, seed: int) -> LayerSizes:
    """Bisection on the average share so that the exact MACs at 10 s are ``target`` of the dense model's."""
    shape = model.shape()
    dense = totals(cost_breakdown(shape, REFERENCE_SAMPLES))["total"].macs
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        macs = totals(cost_breakdown(shape, REFERENCE_SAMPLES, keep_counts(model, mid, pattern, seed)))["total"].macs
        lo, hi = (mid, hi) if macs / dense < target else (lo, mid)
    return keep_counts(model, hi, pattern, seed)


def set_gates(model: Wav2Vec2CtcPruning, counts: LayerSizes, seed: int) -> None:
    """Open exactly ``counts`` randomly chosen units of every structure (log alpha +10), close the rest (-10)."""
    g = torch.Generator().manual_seed(seed)
    w2v = model.w2v_model

    def apply(gate, n_keep):
        la = torch.full((gate.n,), -10.0)
        la[torch.randperm(gate.n, generator=g)[:n_keep]] = 10.0
        with torch.no_grad():
            gate.log_alpha.copy_(la)

    for gate, n in zip(w2v.conv_gates(), counts.conv_channels):
        apply(gate, n)
    for layer, h, u in zip(w2v.encoder_layers(), counts.attention_heads, counts.ffn_units):
        apply(layer.head_gate, h)
        apply(layer.ffn_unit_gate, u)


def build_models(args: argparse.Namespace):
    """The dense wav2vec2-base CTC model and the exported models, with their costs and shapes."""
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
            sizes = shape.sizes
            macs = totals(cost_breakdown(shape, REFERENCE_SAMPLES))["total"].macs
            models[name] = exported
            info[name] = {"macs": macs, "params": sum(p.numel() for p in exported.parameters()),
                          "conv_channels": list(sizes.conv_channels), "heads": list(sizes.attention_heads),
                          "ffn_units": list(sizes.ffn_units)}
            del gated
    return models, info


def write_onnx_files(models: Dict[str, torch.nn.Module], names: List[str], folder: str, int8: bool) -> Dict[str, str]:
    """``{label: .onnx path}``: each named model exported and checked as fairseq-prune-onnx does (logits, no
    padding-mask input), and with ``int8`` its dynamic int8 quantisation (label ``NAME int8``)."""
    from fairseq_prune.onnx.export import OnnxSpec, check_onnx, export_onnx

    spec = OnnxSpec(log_probs=False, padding_mask_input=False)
    files = {}
    for name in names:
        path = os.path.join(folder, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(export_onnx(models[name], spec, {}))
        report = check_onnx(path, models[name], spec)
        print(f"onnx {name}: checked against PyTorch, max |difference| {report.max_abs_diff:.1e}")
        files[name] = path
        if int8:
            files[f"{name} int8"] = quantize_int8(path, os.path.join(folder, f"{name}-int8.onnx"))
    return files


def quantize_int8(path: str, out: str) -> str:
    """onnxruntime's dynamic int8 quantisation of ``path``'s MatMul/Gemm into ``out``; prints how far its logits
    move on 2 s of random audio (max abs difference, share of frames whose best unit changes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs every tensor at INFO, and advice at WARNING
    try:
        # MatMul/Gemm only (the Transformer and projections): int8 convolutions (ConvInteger) ran 2x slower than
        # float ones here, which made the fully quantised dense model slower than the float one
        quantize_dynamic(path, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    feeds = {"source": torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)).numpy()}
    a, b = (torch.from_numpy(ort_session(p, 0).run(None, feeds)[0]) for p in (path, out))
    changed = (a.argmax(-1) != b.argmax(-1)).float().mean().item()
    print(f"onnx {os.path.basename(out)}: max |difference| to float {(a - b).abs().max().item():.2e}, best unit "
          f"changed in {changed:.1%} of frames")
    return out


def run_setting(models, sessions, x: torch.Tensor, rounds: int) -> Dict[str, float]:
    """Median seconds of every eager model (``eager NAME``) and onnxruntime session (``ort LABEL``) on ``x``."""
    feeds = {"source": x.cpu().numpy()}
    runs: Dict[str, Callable[[], Any]] = {}
    for name, m in models.items():
        runs[f"eager {name}"] = lambda m=m: m(source=x, padding_mask=None)
    for label, session in sessions.items():
        runs[f"ort {label}"] = lambda s=session: s.run(None, feeds)
    return time_models(runs, rounds)


def print_rows(t: Dict[str, float], info: Dict, bs: int, threads: int) -> List[Dict]:
    """Rows of one setting: speed-up over eager dense, MAC ratio, efficiency, and for onnxruntime the speed-up
    over the same model in eager PyTorch and over the dense model in onnxruntime (same quantisation)."""
    rows = []
    dense_macs = info["dense"]["macs"]
    for key, seconds in t.items():
        backend, label = key.split(" ", 1)
        name = label.split(" ")[0]
        ratio = info[name]["macs"] / dense_macs
        speedup = t["eager dense"] / seconds
        row = {"model": name, "backend": "onnxruntime" if backend == "ort" else "pytorch", "batch": bs,
               "threads": threads, "seconds": seconds, "speedup": speedup, "mac_ratio": ratio,
               "efficiency": speedup * ratio, "int8": label.endswith("int8")}
        extra = ""
        if backend == "ort":
            dense_ort = t.get(f"ort dense{' int8' if row['int8'] else ''}")
            row["vs_eager_same_model"] = t[f"eager {name}"] / seconds
            row["vs_onnxruntime_dense"] = dense_ort / seconds if dense_ort else None
            extra = f"{row['vs_eager_same_model']:>9.2f}x"
            extra += f"{row['vs_onnxruntime_dense']:>12.2f}x" if dense_ort else ""
        rows.append(row)
        print(f"{label:<19}{row['backend']:<12}{bs:>6}{threads:>8}{seconds * 1000:>10.0f}{speedup:>10.2f}"
              f"{ratio:>11.3f}{speedup * ratio:>11.2f}{extra}")
    sys.stdout.flush()
    return rows


def onnx_names(args: argparse.Namespace, models: Dict) -> List[str]:
    if args.onnx_models is None:
        names = ["dense"] + [n for n in models if n.endswith("-0.5")]
    else:
        names = [n for n in args.onnx_models if n != "none"]
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SystemExit(f"--onnx-models: unknown model(s) {unknown}; these exist: {list(models)}")
    if names:
        try:
            import_onnxruntime()
        except ValueError as e:
            raise SystemExit(f"--onnx-models: {e} (or pass --onnx-models none)")
    if names and args.device != "cpu":
        raise SystemExit("--onnx-models: onnxruntime rows are CPU only; pass --onnx-models none with --device cuda")
    return names


def main(args: argparse.Namespace) -> List[Dict]:
    reuse_freed_memory()  # as fairseq-prune-infer runs models (fairseq_prune.inference.allocator)
    models, info = build_models(args)
    for m in models.values():
        m.to(args.device)
    names = onnx_names(args, models)
    tmp = tempfile.TemporaryDirectory(prefix="bench-onnx-")
    files = write_onnx_files(models, names, tmp.name, args.int8) if names else {}

    rows = []
    samples = int(args.seconds * 16000)
    print(f"device {args.device}, input {args.seconds:g} s, export --round-to {args.round_to}, "
          f"{args.rounds} interleaved rounds, medians; onnxruntime: {', '.join(files) or 'none'}")
    print(f"{'model':<19}{'backend':<12}{'batch':>6}{'threads':>8}{'ms':>10}{'speed-up':>10}{'MAC ratio':>11}"
          f"{'efficiency':>11}{'vs eager':>10}{'vs ort dense':>13}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        sessions = {label: ort_session(path, threads) for label, path in files.items()}
        for bs in args.batch_sizes:
            x = torch.randn(bs, samples, device=args.device)
            rows += print_rows(run_setting(models, sessions, x, args.rounds), info, bs, threads)
        del sessions
    tmp.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "models": info, "torch": torch.__version__, "device": args.device,
                       "onnxruntime": import_onnxruntime().__version__ if files else None}, f, indent=1)
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
