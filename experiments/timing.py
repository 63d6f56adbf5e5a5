"""CPU timing: models called in interleaved rounds (machine noise hits all alike), medians; the speed-up of
exported models over their dense baseline."""
import statistics
import time
from typing import Any, Callable, Dict, List

from .common import log


def load_model(checkpoint: str, manifest: str):
    """The model of a checkpoint in eval mode (its task's data: ``manifest``)."""
    import fairseq_prune  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": manifest})
    return models[0].eval()


def time_models(runs: Dict[str, Callable[[], Any]], rounds: int) -> Dict[str, float]:
    """Median seconds per call, calls interleaved within each round (machine noise hits all alike)."""
    import torch

    times = {k: [] for k in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            run()
        for _ in range(rounds):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def speedups(dense_ckpt: str, pruned_ckpts: List[str], manifest: str, threads: int = 1, rounds: int = 5) -> List[dict]:
    """CPU latency of each exported model vs its dense baseline on one 10 s utterance, all models interleaved
    in each round, medians."""
    import torch

    from fairseq_prune.inference.allocator import reuse_freed_memory

    reuse_freed_memory()  # timed as fairseq-prune-infer runs models
    torch.set_num_threads(threads)
    models = {"dense": load_model(dense_ckpt, manifest)}
    models.update({i: load_model(ckpt, manifest) for i, ckpt in enumerate(pruned_ckpts)})
    audio = torch.randn(1, 160000)
    t = time_models({k: (lambda m=m: m(source=audio, padding_mask=None)) for k, m in models.items()}, rounds)
    return [{"dense_s": t["dense"], "pruned_s": t[i], "speedup": t["dense"] / t[i], "threads": threads}
            for i in range(len(pruned_ckpts))]


def time_against_dense(rows: List[Dict], manifests: Dict[str, str]) -> None:
    """Speed-up and MAC ratio of every row against the dense baseline of its corpus and seed (the row whose
    method is ``dense``)."""
    for corpus in sorted({r["corpus"] for r in rows}):
        for seed in sorted({r["seed"] for r in rows}):
            group = [r for r in rows if r["corpus"] == corpus and r["seed"] == seed]
            dense = next(r for r in group if r["method"] == "dense")
            for r in group:
                r["macs_ratio"] = r["macs"] / dense["macs"]
            pruned = [r for r in group if r["macs_ratio"] < 0.999]
            if pruned:
                log(f"timing the exported {corpus} models of seed {seed} against the dense one (10 s, batch 1)")
                for row, timing in zip(pruned, speedups(dense["checkpoint"], [r["checkpoint"] for r in pruned],
                                                        manifests[corpus])):
                    row.update(timing)
