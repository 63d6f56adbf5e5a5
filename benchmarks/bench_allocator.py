"""What keeping freed memory (``fairseq_prune.inference.allocator``) does to CPU inference: the dense model of each
size called on 10 s of audio (batch 1, 1 thread, eager PyTorch, random weights) with glibc's default allocator and
with :func:`~fairseq_prune.inference.allocator.reuse_freed_memory`, side by side: child processes of the two
settings alternate (``--repeats`` each), and each reports the median of ``--rounds`` calls of the whole model and
of its feature extractor, and the minor page faults per call.

    python benchmarks/bench_allocator.py [--sizes mini base] [--rounds 5] [--repeats 2] [--json FILE]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

SETTINGS = {"glibc default": {"FAIRSEQ_PRUNE_MALLOC": "default"}, "reuse freed memory": {}}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=["mini", "base"], default=["mini", "base"])
    p.add_argument("--rounds", type=int, default=5, help="timed calls per child process")
    p.add_argument("--repeats", type=int, default=2, help="child processes per size and setting, alternating")
    p.add_argument("--json", metavar="FILE", help="write the rows there")
    p.add_argument("--child", choices=["mini", "base"], help=argparse.SUPPRESS)
    return p


def time_calls(call, rounds: int) -> Dict[str, float]:
    """Median milliseconds and minor page faults per call of ``call`` (one warm-up call first)."""
    call()
    ms, faults = [], []
    for _ in range(rounds):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        call()
        ms.append((time.perf_counter() - t0) * 1000.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"ms": statistics.median(ms), "faults": statistics.median(faults)}


def child(size: str, rounds: int) -> Dict:
    """One process's timings (the setting comes from its environment)."""
    import torch

    from bench_latency import SHAPES
    from experiments.checkpoints import wav2vec2_pretraining_cfg
    from fairseq_prune.inference.allocator import reuse_freed_memory
    from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning

    applied = reuse_freed_memory()
    torch.set_num_threads(1)
    model = Wav2Vec2CtcPruning.from_w2v_args(wav2vec2_pretraining_cfg(SHAPES[size]), 32).eval()
    audio = torch.randn(1, 160000)
    extractor = model.w2v_encoder.w2v_model.feature_extractor
    with torch.inference_mode():
        whole = time_calls(lambda: model(source=audio, padding_mask=None), rounds)
        features = time_calls(lambda: extractor(audio), rounds)
    return {"applied": applied, "model_ms": whole["ms"], "model_faults": whole["faults"],
            "extractor_ms": features["ms"], "extractor_faults": features["faults"]}


def run_child(size: str, setting: str, rounds: int) -> Dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FAIRSEQ_PRUNE_MALLOC", "MALLOC_MMAP_THRESHOLD_",
                                                            "GLIBC_TUNABLES")}  # the two settings, nothing else
    env.update(SETTINGS[setting], PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--child", size, "--rounds", str(rounds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> List[Dict]:
    rows = []
    for size in args.sizes:
        runs: Dict[str, List[Dict]] = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:  # alternating, so that the machine's load hits both alike
                runs[setting].append(run_child(size, setting, args.rounds))
        for setting, got in runs.items():
            row = {"size": size, "setting": setting, "applied": got[0]["applied"]}
            row.update({k: statistics.median(g[k] for g in got) for k in got[0] if k != "applied"})
            rows.append(row)
    print(f"{'size':<5} {'setting':<19} {'model ms':>9} {'faults/call':>11} {'extractor ms':>12} {'faults/call':>11}")
    for r in rows:
        print(f"{r['size']:<5} {r['setting']:<19} {r['model_ms']:>9.1f} {r['model_faults']:>11.0f} "
              f"{r['extractor_ms']:>12.1f} {r['extractor_faults']:>11.0f}")
    for size in args.sizes:
        default, reuse = (next(r for r in rows if r["size"] == size and r["setting"] == s) for s in SETTINGS)
        print(f"{size}: reusing freed memory makes the model {default['model_ms'] / reuse['model_ms']:.2f}x and its "
              f"feature extractor {default['extractor_ms'] / reuse['extractor_ms']:.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    parsed = get_parser().parse_args()
    if parsed.child:
        print(json.dumps(child(parsed.child, parsed.rounds)))
    else:
        main(parsed)
