"""``fairseq-prune-latency TABLE.json DENSE.pt EXPORTED.pt [...]``: the latency table's prediction against a
measurement, for exported models (issue #25's check of ``criterion.budget=latency``).

For each exported model: the latency the table predicts as a ratio of the dense model's, and the speed-up measured
here, the dense model and the exported one timed side by side in one run (rounds interleaved, median of each) with
the table's settings (threads, batch, input length), beside the ratio of their MACs. The models are built at the
checkpoints' sizes with random weights: their time does not depend on the weights (as the profiler's blocks).
``--json`` writes the rows in the format of ``docs/results/latency.json``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

from ..cost import REFERENCE_SAMPLES, Wav2Vec2Shape, cost_breakdown, totals
from ..inference.allocator import reuse_freed_memory
from ..latency import LatencyTable
from .profile import model_runner, run_command
from .startup import add_verbose_option


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-prune-latency", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="the latency table (fairseq-prune-profile) of the dense model's architecture")
    p.add_argument("dense", help="the dense model: a pre-training or fine-tuned checkpoint of that architecture")
    p.add_argument("exported", nargs="+", help="exported checkpoints (fairseq-prune-export) to check")
    p.add_argument("--rounds", type=int, default=10, help="timed calls of each model (default 10)")
    p.add_argument("--size", default="", help="label of the rows' 'size' field (e.g. base, mini)")
    p.add_argument("--budget", default="", help="label of the rows' 'budget' field (e.g. macs, latency)")
    p.add_argument("--target", type=float, default=None, help="the rows' 'target' field")
    p.add_argument("--json", metavar="FILE.json", help="write {'rows': [...]} there (replaces FILE.json)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time each part of each model (conv layers, attention, FFN, positional conv, layer "
                        "norms, output) and print where the time goes, dense beside exported")
    add_verbose_option(p)
    return p


def part_of(name: str) -> str:
    """The breakdown's part a module belongs to ('' for modules not timed on their own)."""
    tail = name.split("w2v_model.", 1)[-1]
    if tail in ("layer_norm", "post_extract_proj"):
        return "features: norm + projection"
    if tail == "encoder.pos_conv":
        return "positional conv"
    if tail.startswith("encoder.layers.") and tail.count(".") == 3:
        leaf = tail.rsplit(".", 1)[1]
        return {"self_attn": "attention", "fc1": "ffn (fc1, fc2)", "fc2": "ffn (fc1, fc2)",
                "self_attn_layer_norm": "layer norms", "final_layer_norm": "layer norms"}.get(leaf, "")
    if tail == "encoder.layer_norm":
        return "layer norms"
    return "output" if name == "w2v_encoder.proj" else ""


def conv_hooks(model: torch.nn.Module, spent: Dict[str, float]) -> List:
    """Hooks that time each conv layer (``conv.i``): its conv runs as a function call, not as a module, so a
    layer's time is from the end of the one before (or the extractor's start) to the end of its GELU."""
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    mark: Dict[str, float] = {}
    hooks = [extractor.register_forward_pre_hook(lambda m, i: mark.__setitem__("t", time.perf_counter()))]

    def ended(part: str) -> Callable:
        def hook(m, i, o):
            now = time.perf_counter()
            spent[part] = spent.get(part, 0.0) + now - mark["t"]
            mark["t"] = now
        return hook

    for k, block in enumerate(extractor.conv_layers):
        hooks.append(block[-1].register_forward_hook(ended(f"conv.{k}")))
    return hooks


def breakdown_ms(model: torch.nn.Module, audio: torch.Tensor, rounds: int) -> Dict[str, float]:
    """Median milliseconds per part (``conv.i``, :func:`part_of`) and in all (``total``); ``other``: what no
    part covers (masks, GELU of the FFN, residuals, padding)."""
    started: Dict[int, float] = {}
    spent: Dict[str, float] = {}
    hooks = conv_hooks(model, spent)
    for name, module in model.named_modules():
        part = part_of(name)
        if part:
            hooks.append(module.register_forward_pre_hook(lambda m, i: started.__setitem__(id(m), time.perf_counter())))
            hooks.append(module.register_forward_hook(
                lambda m, i, o, part=part: spent.__setitem__(part, spent.get(part, 0.0)
                                                              + time.perf_counter() - started[id(m)])))
    per_round: Dict[str, List[float]] = {}
    try:
        with torch.inference_mode():
            model(source=audio, padding_mask=None)
            for _ in range(rounds):
                spent.clear()
                t0 = time.perf_counter()
                model(source=audio, padding_mask=None)
                spent["total"] = time.perf_counter() - t0
                for k, v in spent.items():
                    per_round.setdefault(k, []).append(v * 1000.0)
    finally:
        for h in hooks:
            h.remove()
    out = {k: statistics.median(v) for k, v in per_round.items()}
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")  # the medians add up
    return out


def print_breakdown(dense: Dict[str, float], pruned: Dict[str, float], path: str) -> None:
    print(f"where the time goes (ms, median): dense vs {path}")
    for part in sorted(dense, key=lambda k: (k in ("other", "total"), k)):
        d, p = dense[part], pruned.get(part, 0.0)
        share = 100.0 * d / dense["total"]
        print(f"  {part:<28} {d:8.2f} {p:8.2f}  ({share:4.1f}% of dense; kept {p / d if d else 0:.2f})")


def timing_model(path: str) -> Tuple[torch.nn.Module, Wav2Vec2Shape]:
    """The model of checkpoint ``path`` at its per-layer sizes (dense when it has none), random weights, eval;
    and the shape of the dense architecture it was pruned from (what a latency table is made for)."""
    from ..io.checkpoints import load_w2v_source
    from ..models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning

    source = load_w2v_source(path)
    vocab = int(source.proj_state["weight"].shape[0]) if source.proj_state else 32
    fields = source.sizes.as_dict(skip_empty=True) if source.sizes is not None else {}
    model = Wav2Vec2CtcPruning.from_w2v_args(source.w2v_args, vocab, **fields).eval()
    return model, Wav2Vec2Shape.from_w2v_cfg(source.w2v_args.model)


def side_by_side_ms(a: Callable[[], object], b: Callable[[], object], rounds: int) -> Tuple[float, float]:
    """Median milliseconds of the calls ``a`` and ``b``, interleaved (one warm-up each)."""
    times: Dict[int, List[float]] = {0: [], 1: []}
    with torch.inference_mode():
        for call in (a, b):
            call()
        for _ in range(rounds):
            for k, call in enumerate((a, b)):
                t0 = time.perf_counter()
                call()
                times[k].append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def macs(model) -> float:
    return float(totals(cost_breakdown(model.shape(), REFERENCE_SAMPLES))["total"].macs)


def git_commit() -> str:
    p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                       capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def table_audio(table: LatencyTable) -> torch.Tensor:
    """Random audio of the table's batch and input length (the table's threads are set too)."""
    torch.set_num_threads(int(table.data.get("threads", 1)))
    return torch.randn(int(table.data.get("batch", 1)), int(round(float(table.data.get("seconds", 10.0)) * 16000)))


def check_model(table: LatencyTable, dense, model, rounds: int, breakdown: bool = False) -> Dict:
    """One model's prediction and measurement against the dense model's (see the module's docstring)."""
    audio = table_audio(table)
    backend, threads = table.data.get("backend", "eager"), int(table.data.get("threads", 1))
    dense_ms, ms = side_by_side_ms(model_runner(dense, audio, backend, threads),
                                   model_runner(model, audio, backend, threads), rounds)
    row = {
        "backend": backend, "threads": table.data.get("threads"),
        "batch": table.data.get("batch"), "seconds": table.data.get("seconds"),
        "predicted_latency_ratio": round(float(table.predict(model.shape().sizes)
                                               / table.predict(dense.shape().sizes)), 4),
        "measured_latency_ratio": round(ms / dense_ms, 4), "measured_speedup": round(dense_ms / ms, 4),
        "dense_ms": round(dense_ms, 2), "ms": round(ms, 2), "macs_ratio": round(macs(model) / macs(dense), 4),
        "device": table.data.get("device"), "commit": git_commit(),
    }
    if breakdown and backend == "eager":  # module hooks: PyTorch only
        row["breakdown_ms"] = {"dense": breakdown_ms(dense, audio, rounds),
                               "exported": breakdown_ms(model, audio, rounds)}
    return row


def print_row(name: str, r: Dict) -> None:
    print(f"{name}: predicted {r['predicted_latency_ratio']:.3f} of the dense latency, measured "
          f"{r['measured_latency_ratio']:.3f} ({r['ms']:.1f} vs {r['dense_ms']:.1f} ms, speed-up "
          f"{r['measured_speedup']:.2f}x), MACs {r['macs_ratio']:.3f}", flush=True)
    if "breakdown_ms" in r:
        print_breakdown(r["breakdown_ms"]["dense"], r["breakdown_ms"]["exported"], name)


def write_rows(path: str, rows: List[Dict]) -> None:
    """``{"rows": rows}`` to ``path``, complete or absent (replacing it)."""
    from ..io.checkpoints import atomic_output
    from ..io.safe_output import writing

    with writing(path), atomic_output(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump({"rows": rows}, f, indent=1)


def main(args: argparse.Namespace) -> List[Dict]:
    table = LatencyTable.load(args.table)
    reuse_freed_memory()  # timed as fairseq-prune-infer runs models (inference.allocator)
    dense, dense_shape = timing_model(args.dense)
    table.check(dense_shape)
    rows = []
    for path in args.exported:
        model, pruned_from = timing_model(path)
        table.check(pruned_from)  # pruned from the table's architecture
        row = {"model": path, "size": args.size, "budget": args.budget, "target": args.target,
               **check_model(table, dense, model, args.rounds, args.breakdown),
               "command": " ".join(["fairseq-prune-latency", *sys.argv[1:]])}
        rows.append(row)
        print_row(path, row)
    if args.json:
        write_rows(args.json, rows)
    return rows


def cli_main() -> None:
    run_command(get_parser, main)


if __name__ == "__main__":
    cli_main()
