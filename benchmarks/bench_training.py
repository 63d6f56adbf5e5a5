"""Training cost of HJ-Pruning: seconds per update and peak memory of wav2vec2_ctc_pruning + ctc_pruning (all
gates on) vs fairseq's plain wav2vec_ctc + ctc, same weights, same batches, same optimizer.

Each update is forward + backward + Adam step on one batch. The two set-ups alternate update by update in one
process (medians reported), so machine noise hits both alike. Peak memory is measured in a fresh child process
per set-up (peak resident set size on CPU; peak allocated memory on CUDA).

    python benchmarks/bench_training.py [--size mini|base] [--batch 8] [--seconds 4] [--updates 20]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict

import torch

from experiments.checkpoints import write_wav2vec2_checkpoint
from experiments.common import MINI_W2V  # the demo's model

SIZES = {"mini": MINI_W2V, "base": {}}
LETTERS = list("|ETAONIHSRDLUMWCFGYPBVKXJQZ'")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="mini")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length")
    p.add_argument("--updates", type=int, default=20, help="timed updates per set-up (after 3 warm-up updates)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--memory-child", choices=["fairseq", "pruning"], help=argparse.SUPPRESS)
    return p


def setup(kind: str, size: str, device: str, workdir: str):
    """(model, criterion, optimizer) for ``fairseq`` (wav2vec_ctc + ctc) or ``pruning`` (ours, all gates)."""
    import fairseq_prune  # noqa: F401
    from fairseq import tasks
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig
    from omegaconf import OmegaConf, open_dict

    from fairseq_prune.criterions.ctc_pruning import CtcPruningCriterion, CtcPruningCriterionConfig
    from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
    from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig

    ckpt = os.path.join(workdir, f"{size}.pt")
    if not os.path.exists(ckpt):
        write_wav2vec2_checkpoint(ckpt, SIZES[size], seed=0)
    with open(os.path.join(workdir, "dict.ltr.txt"), "w") as f:
        f.writelines(f"{c} {1000 - i}\n" for i, c in enumerate(LETTERS))
    common = dict(w2v_path=ckpt, feature_grad_mult=1.0, mask_prob=0.5, mask_length=10, layerdrop=0.0)
    if kind == "fairseq":
        model_dc, name = Wav2Vec2CtcConfig(**common), "wav2vec_ctc"
    else:
        model_dc, name = Wav2Vec2CtcPruningConfig(**common, prune_conv_channels=True, prune_attention_heads=True,
                                                  prune_ffn_units=True), "wav2vec2_ctc_pruning"
    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.task = OmegaConf.structured(AudioFinetuningConfig(data=workdir, labels="ltr", normalize=False))
        cfg.task._name = "audio_finetuning"
        cfg.model = OmegaConf.structured(model_dc)
        cfg.model._name = name
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model).to(device).train()
    if kind == "fairseq":
        criterion = CtcCriterion(CtcCriterionConfig(zero_infinity=True, sentence_avg=True), task)
    else:
        criterion = CtcPruningCriterion(
            CtcPruningCriterionConfig(zero_infinity=True, sentence_avg=True, budget="macs", target=0.5), task
        )
    criterion = criterion.to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=1e-5)
    return model, criterion, opt


def make_batch(batch: int, seconds: float, device: str) -> Dict:
    g = torch.Generator().manual_seed(0)
    n = int(seconds * 16000)
    lengths = [n - i * n // (4 * batch) for i in range(batch)]  # different lengths: padding is exercised
    source = torch.randn(batch, n, generator=g)
    pad = torch.zeros(batch, n, dtype=torch.bool)
    for i, length in enumerate(lengths):
        source[i, length:] = 0
        pad[i, length:] = True
    tlen = int(seconds * 12)
    target = torch.randint(4, 4 + len(LETTERS), (batch, tlen), generator=g)
    return {
        "id": torch.arange(batch),
        "net_input": {"source": source.to(device), "padding_mask": pad.to(device)},
        "target": target.to(device),
        "target_lengths": torch.full((batch,), tlen, device=device),
        "ntokens": batch * tlen,
    }


def update(model, criterion, opt, sample) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, _, _ = criterion(model, sample)
    loss.backward()
    opt.step()
    if sample["target"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_memory_child(args: argparse.Namespace, kind: str) -> float:
    """Peak memory (MB) of a fresh process running a few updates of one set-up."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", kind, "--size", args.size, "--batch",
           str(args.batch), "--seconds", str(args.seconds), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model, criterion, opt = setup(args.memory_child, args.size, args.device, work)
        sample = make_batch(args.batch, args.seconds, args.device)
        update(model, criterion, opt, sample)  # optimizer state exists from here on
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS: what follows measures the training updates only
        for _ in range(3):
            update(model, criterion, opt, sample)
        if args.device.startswith("cuda"):
            print(torch.cuda.max_memory_allocated() / 2**20)
        else:
            print(_peak_rss_mb())


def main(args: argparse.Namespace) -> Dict:
    if args.memory_child:
        memory_child(args)
        return {}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        setups = {kind: setup(kind, args.size, args.device, work) for kind in ("fairseq", "pruning")}
        sample = make_batch(args.batch, args.seconds, args.device)
        times = {kind: [] for kind in setups}
        for i in range(args.updates + 3):
            for kind, (model, criterion, opt) in setups.items():
                t = update(model, criterion, opt, sample)
                if i >= 3:
                    times[kind].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {kind: peak_memory_child(args, kind) for kind in ("fairseq", "pruning")}
    unit = "MB allocated" if args.device.startswith("cuda") else "MB peak RSS"
    print(f"size {args.size}, batch {args.batch} x {args.seconds:g} s, {args.threads} threads, {args.device}, "
          f"median of {args.updates} interleaved updates")
    print(f"{'set-up':<40}{'s/update':>10}{unit:>16}")
    print(f"{'wav2vec_ctc + ctc (fairseq)':<40}{med['fairseq']:>10.3f}{mem['fairseq']:>16.0f}")
    print(f"{'wav2vec2_ctc_pruning + ctc_pruning':<40}{med['pruning']:>10.3f}{mem['pruning']:>16.0f}")
    result = {
        "size": args.size, "batch": args.batch, "seconds": args.seconds, "threads": args.threads,
        "device": args.device, "s_per_update": med, "overhead": med["pruning"] / med["fairseq"],
        "peak_memory_mb": mem, "memory_ratio": mem["pruning"] / mem["fairseq"],
    }
    print(f"time overhead {result['overhead']:.3f}x, memory {result['memory_ratio']:.3f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(get_parser().parse_args())
