"""``fairseq-prune-profile CHECKPOINT TABLE.json``: measure a per-device latency table for ``criterion.budget=latency``
(:mod:`fairseq_prune.latency`).

Times, on this machine and backend, every prunable block of the checkpoint's wav2vec2 architecture over a grid of
kept sizes (each conv layer over input x output channels, an encoder layer's attention over head counts and its
FFN over widths) and the dense model as a whole, at a reference input length and batch, the median of
``--rounds`` timed calls after a warm-up; writes the table with the device, library versions and settings.
Blocks are built as the exported model runs them (fairseq's conv block with its norm and GELU, our attention
with any head count, fc1-GELU-fc2), randomly initialised: the time does not depend on the weights.
"""
import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

from ..cost import Wav2Vec2Shape
from ..inference.allocator import reuse_freed_memory
from ..latency import FORMAT, architecture_key
from .startup import add_verbose_option

BACKENDS = ("eager", "onnxruntime")


class _Block(nn.Module):
    """A block's eval-mode forward as a module of one input, for tracing: an encoder layer's FFN
    (``PrunableEncoderLayer.feed_forward``), as the exported model and its ONNX graph run it."""

    def __init__(self, fn: Callable, owner: nn.Module) -> None:
        super().__init__()
        self.fn, self.owner = fn, owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.owner, x)


def runner(module: nn.Module, inputs: Dict[str, torch.Tensor], backend: str, threads: int) -> Callable[[], object]:
    """A call of ``module`` on ``inputs`` as ``backend`` runs it: eager PyTorch, or onnxruntime on the graph the
    module traces to (fixed shapes: the timed ones; ``threads`` intra-op threads)."""
    if backend == "eager":
        args = tuple(inputs.values())
        return lambda: module(*args)
    import io

    from ..onnx.export import OPSET
    from ..onnx.runtime import import_onnxruntime

    ort = import_onnxruntime()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(buffer.getvalue(), sess_options=options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}  # an input the graph does not read is folded away
    feeds = {k: v.numpy() for k, v in inputs.items() if k in wanted}
    return lambda: session.run(None, feeds)


def model_runner(model: nn.Module, audio: torch.Tensor, backend: str, threads: int) -> Callable[[], object]:
    """A whole CTC model's call on ``audio`` (no padding): the model itself, or the graph fairseq-prune-onnx
    writes for it (logits out, no padding-mask input) run by onnxruntime."""
    if backend == "eager":
        return lambda: model(source=audio, padding_mask=None)
    from ..onnx.export import TraceableCtc

    return runner(TraceableCtc(model, log_probs=False).eval(), {"source": audio}, backend, threads)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-prune-profile", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a wav2vec2 pre-training or fine-tuned checkpoint (its dense architecture)")
    p.add_argument("output", help="the table to write (JSON)")
    p.add_argument("--backend", choices=BACKENDS, default="eager",
                   help="eager: PyTorch; onnxruntime: each block (and the model) traced to ONNX and run by "
                        "onnxruntime's CPU provider, as fairseq-prune-infer --backend onnxruntime runs it")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    p.add_argument("--batch", type=_positive, default=1, help="utterances per call (default 1)")
    p.add_argument("--seconds", type=float, default=10.0, help="input length at 16 kHz (default 10)")
    p.add_argument("--grid", type=_at_least_two, default=9, help="grid points per size axis (default 9)")
    p.add_argument("--rounds", type=_positive, default=5, help="timed calls per grid point (default 5)")
    p.add_argument("--device-name", help="the device string stored in the table (default: CPU model x threads)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    add_verbose_option(p)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def device_name(threads: int) -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and the thread count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} x {threads} thread{'s' if threads > 1 else ''}"


def versions(backend: str) -> Dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    if backend == "onnxruntime":
        from ..onnx.runtime import import_onnxruntime

        out["onnxruntime"] = import_onnxruntime().__version__
    return out


def grid(full: int, points: int, low: int) -> List[int]:
    """``points`` sizes from ``low`` to ``full``, evenly spaced, without repeats."""
    return sorted({low, full, *(low + round((full - low) * k / (points - 1)) for k in range(points))})


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of ``rounds`` calls after one warm-up."""
    with torch.inference_mode():
        fn()  # warm-up (allocations, kernel choice)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def conv_block(shape: Wav2Vec2Shape, i: int, c_in: int, c_out: int) -> nn.Module:
    """Conv layer ``i`` as fairseq builds it: conv, its norm (GroupNorm on layer 0 in ``default`` mode, LayerNorm
    over channels in ``layer_norm`` mode), GELU."""
    from fairseq.modules import Fp32GroupNorm, Fp32LayerNorm, TransposeLast

    parts: List[nn.Module] = [nn.Conv1d(c_in, c_out, shape.conv_kernels[i], stride=shape.conv_strides[i],
                                        bias=shape.conv_bias)]
    if shape.extractor_mode == "layer_norm":
        parts += [TransposeLast(), Fp32LayerNorm(c_out, elementwise_affine=True), TransposeLast()]
    elif i == 0:
        parts.append(Fp32GroupNorm(c_out, c_out, affine=True))
    return nn.Sequential(*parts, nn.GELU()).eval()


def profile_blocks(shape: Wav2Vec2Shape, args) -> Dict:
    """The conv, attention and FFN grids (milliseconds)."""
    from ..modules.attention import PrunableSelfAttention
    from ..modules.encoder_layer import PrunableEncoderLayer

    samples = int(round(args.seconds * 16000))
    frames = [samples] + shape.conv_frames(samples)
    full = shape.sizes

    def ms(module: nn.Module, x: torch.Tensor) -> float:
        return median_ms(runner(module.eval(), {"x": x}, args.backend, args.threads), args.rounds)

    conv = []
    for i, c in enumerate(full.conv_channels):
        ins = [1] if i == 0 else grid(full.conv_channels[i - 1], args.grid, 1)
        outs = grid(c, args.grid, 1)
        conv.append({"layer": i, "c_in": ins, "c_out": outs,
                     "ms": [[ms(conv_block(shape, i, ci, co), torch.randn(args.batch, ci, frames[i])) for co in outs]
                            for ci in ins]})
    D, T = shape.embed_dim, frames[-1]
    x = torch.randn(T, args.batch, D)
    heads = grid(max(full.attention_heads), min(args.grid, max(full.attention_heads) + 1), 0)
    attention = []
    for h in heads:  # the module's own forward (no padding), as the exported model and its ONNX graph run it
        attention.append(ms(PrunableSelfAttention(D, h, shape.head_dim), x))
    units = grid(max(full.ffn_units), args.grid, 0)

    def ffn(u: int) -> nn.Module:  # u 0: no unit left, only fc2's bias (as an exported layer)
        return _Block(lambda layer, t: layer.feed_forward(t), PrunableEncoderLayer(D, 0, shape.head_dim, u))

    return {"conv": conv, "attention": {"sizes": heads, "ms": attention},
            "ffn": {"sizes": units, "ms": [ms(ffn(u), x) for u in units]}}


def main(args: argparse.Namespace) -> Dict:
    from ..io.checkpoints import atomic_output, load_w2v_source
    from ..io.safe_output import writing
    from ..latency import LatencyTable, calibrate, floor_sizes
    from ..models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning

    if os.path.lexists(args.output) and not args.force:
        raise SystemExit(f"fairseq-prune-profile: error: {args.output} exists; pass --force to overwrite it")
    reuse_freed_memory()  # timed as fairseq-prune-infer runs models (inference.allocator)
    torch.set_num_threads(args.threads)
    started = time.time()
    source = load_w2v_source(args.checkpoint)
    model = Wav2Vec2CtcPruning.from_w2v_args(source.w2v_args, 32).eval()
    shape = model.shape()
    table = {"format": FORMAT, "architecture": architecture_key(shape),
             "device": args.device_name or device_name(args.threads), "backend": args.backend,
             "threads": args.threads, "batch": args.batch, "seconds": args.seconds, "rounds": args.rounds,
             "versions": versions(args.backend),
             "checkpoint": os.path.abspath(args.checkpoint)}
    table.update(profile_blocks(shape, args))
    audio = torch.randn(args.batch, int(round(args.seconds * 16000)))
    floor = floor_sizes(shape.sizes)  # what no gate removes, measured in a whole model rather than inferred
    floor_model = Wav2Vec2CtcPruning.from_w2v_args(source.w2v_args, 32, conv_channels=list(floor.conv_channels),
                                                   attention_heads=list(floor.attention_heads),
                                                   ffn_units=list(floor.ffn_units)).eval()
    table["dense_ms"] = median_ms(model_runner(model, audio, args.backend, args.threads), args.rounds)
    table["floor_ms"] = median_ms(model_runner(floor_model, audio, args.backend, args.threads), args.rounds)
    unscaled = LatencyTable({**table, "rest_ms": 0.0, "block_scale": 1.0})
    blocks = float(sum(unscaled.blocks(shape.sizes).values()))
    table.update(calibrate(table["dense_ms"], table["floor_ms"], blocks, float(sum(unscaled.blocks(floor).values()))))
    table["profile_minutes"] = round((time.time() - started) / 60, 2)
    with writing(args.output), atomic_output(args.output, ".json") as tmp, open(tmp, "w") as f:
        json.dump(table, f, indent=1)  # complete or absent: a signal or a full disk leaves no temporary file
    print(f"fairseq-prune-profile: wrote {args.output}: dense {table['dense_ms']:.1f} ms ({blocks:.1f} ms in the "
          f"prunable blocks timed alone, scaled by {table['block_scale']:.3f}; {table['rest_ms']:.1f} ms that no gate "
          f"removes), {table['device']}, {table['profile_minutes']} min")
    return table


def run_command(get_parser_fn: Callable[[], argparse.ArgumentParser], main_fn: Callable) -> None:
    """Parse the command line and run ``main_fn``; a refusal (PluginError) ends with one ``PROG: error:`` line and
    status 1, SIGTERM with status 143 (:func:`fairseq_prune.io.signals.run_or_exit`)."""
    from ..io.signals import run_or_exit

    parser = get_parser_fn()
    args = parser.parse_args()
    run_or_exit(lambda: main_fn(args), parser.prog)


def cli_main() -> None:
    run_command(get_parser, main)


if __name__ == "__main__":
    cli_main()
