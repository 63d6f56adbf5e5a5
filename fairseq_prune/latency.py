"""Latency as a cost: a per-device table of measured block times (``fairseq-prune-profile`` writes it) and the
latency it predicts for any per-layer sizes, exact or expected under the gates (differentiable).

The model's time is modelled as the sum of its prunable blocks plus a fixed rest:

    latency(sizes) = sum_i conv_i(c_{i-1}, c_i) + sum_l attention(h_l) + sum_l ffn(u_l) + rest

``conv_i`` is measured on a grid of (input, output) channel counts of conv layer ``i`` (layer 0: one input
channel), ``attention`` on a grid of head counts and ``ffn`` of FFN widths (every Transformer layer has the
same shape, so one grid serves all), at the table's input length and batch. Blocks timed alone do not take
exactly what they take inside the model, so the sum is calibrated on two whole models timed by the profiler, the
dense one and the *floor* one (every prunable block at its smallest: one conv channel, no head, no FFN unit):
the blocks are scaled by ``block_scale`` and ``rest`` (positional convolution, norms, projections, framework
overhead: what no gate removes) is the floor model's time less its tiny blocks', so that the table predicts
both models' measured times (:func:`calibrate`). Between grid points the time is interpolated
linearly (bilinearly for the conv layers) over values made non-decreasing along every axis, so the prediction
is monotone in every size and has a gradient almost everywhere. With expected sizes the blocks are evaluated
at the expected counts (a plug-in estimate of the expected latency).

Table format (JSON): ``format``, ``architecture`` (:func:`architecture_key` of the dense model), ``device``,
``backend``, ``threads``, ``batch``, ``seconds``, ``versions``, ``conv`` (per layer: ``c_in``, ``c_out`` grids
and ``ms`` rows), ``attention`` / ``ffn`` (``sizes`` grid and ``ms``), ``rest_ms``, ``block_scale``,
``dense_ms``, ``floor_ms`` (tables made before the floor model: the rest is the dense time less the blocks').
"""
import json
from typing import Any, Dict, List, Sequence

import torch

from .cost import Wav2Vec2Shape
from .io.errors import ConfigError
from .layer_sizes import LayerSizes

FORMAT = "fairseq-prune-latency/1"


def floor_sizes(sizes: LayerSizes) -> LayerSizes:
    """The smallest sizes of an architecture: one channel per conv layer, no head, no FFN unit."""
    return LayerSizes(tuple(1 for _ in sizes.conv_channels), tuple(0 for _ in sizes.attention_heads),
                      tuple(0 for _ in sizes.ffn_units))


def calibrate(dense_ms: float, floor_ms: float, dense_blocks: float, floor_blocks: float) -> Dict[str, float]:
    """``block_scale`` and ``rest_ms`` such that ``scale * blocks + rest`` is the measured time of both the dense
    model (its blocks sum to ``dense_blocks`` timed alone) and the floor model (``floor_blocks``). Where the two
    measurements admit no such fit with a positive scale and a rest of at least 0 (timer noise on tiny inputs),
    the rest is the dense time less its blocks', scaled down to it where they overrun it: the dense time stays
    exact either way."""
    scale = (dense_ms - floor_ms) / (dense_blocks - floor_blocks) if dense_blocks > floor_blocks else 0.0
    rest = floor_ms - scale * floor_blocks
    if scale <= 0 or rest < 0:
        scale = min(1.0, dense_ms / dense_blocks) if dense_blocks > 0 else 1.0
        rest = dense_ms - scale * dense_blocks
    return {"block_scale": scale, "rest_ms": rest}


def architecture_key(shape: Wav2Vec2Shape) -> Dict[str, Any]:
    """What a table's timings depend on: the dense model's sizes, kernels and strides (plain JSON types)."""
    return {"conv_channels": list(shape.sizes.conv_channels), "conv_kernels": list(shape.conv_kernels),
            "conv_strides": list(shape.conv_strides), "conv_bias": shape.conv_bias,
            "extractor_mode": shape.extractor_mode, "embed_dim": shape.embed_dim, "head_dim": shape.head_dim,
            "attention_heads": list(shape.sizes.attention_heads), "ffn_units": list(shape.sizes.ffn_units),
            "pos_conv_kernel": shape.pos_conv_kernel, "pos_conv_groups": shape.pos_conv_groups}


def monotone(values: Sequence) -> List:
    """Running maximum along the list (rows of a 2-D grid: along both axes)."""
    if values and isinstance(values[0], (list, tuple)):
        rows = [monotone(r) for r in values]
        cols = [monotone([r[j] for r in rows]) for j in range(len(rows[0]))]
        return [[cols[j][i] for j in range(len(cols))] for i in range(len(rows))]
    out, best = [], float("-inf")
    for v in values:
        best = max(best, float(v))
        out.append(best)
    return out


def _segment(grid: List[float], x) -> tuple:
    """(index of the grid segment holding ``x``, clamped; the fraction of the way along it, a tensor)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    g = torch.tensor(grid, dtype=torch.float64)
    i = int(torch.clamp(torch.searchsorted(g, x.detach().reshape(1), right=True) - 1, 0, len(grid) - 2))
    return i, (x - g[i]) / (g[i + 1] - g[i])


def interp1(grid: List[float], values: List[float], x) -> torch.Tensor:
    """Piecewise-linear interpolation (linear extrapolation past the ends) of ``values`` over ``grid``."""
    if len(grid) == 1:
        return torch.as_tensor(float(values[0]), dtype=torch.float64) + 0 * torch.as_tensor(x, dtype=torch.float64)
    i, f = _segment(grid, x)
    return values[i] + (values[i + 1] - values[i]) * f


def interp2(rows: List[float], cols: List[float], values: List[List[float]], r, c) -> torch.Tensor:
    """Bilinear interpolation of ``values[i][j]`` at (``rows``[i], ``cols``[j])."""
    if len(rows) == 1:
        return interp1(cols, values[0], c) + 0 * torch.as_tensor(r, dtype=torch.float64)
    i, f = _segment(rows, r)
    return interp1(cols, values[i], c) * (1 - f) + interp1(cols, values[i + 1], c) * f


class LatencyTable:
    """A table read from JSON (:meth:`load`) or made by the profiler; predicts milliseconds for per-layer sizes."""

    def __init__(self, data: Dict[str, Any], path: str = "<table>") -> None:
        self.data, self.path = data, path
        self.conv = [dict(layer, ms=monotone(layer["ms"])) for layer in data["conv"]]
        self.attention = dict(data["attention"], ms=monotone(data["attention"]["ms"]))
        self.ffn = dict(data["ffn"], ms=monotone(data["ffn"]["ms"]))

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the latency table ({e.strerror or e})") from None
        except ValueError as e:
            raise ConfigError(f"{path}: not a latency table (not JSON: {e})") from None
        missing = [k for k in ("format", "architecture", "device", "conv", "attention", "ffn", "rest_ms")
                   if k not in data] if isinstance(data, dict) else ["format"]
        if missing or data["format"] != FORMAT:
            raise ConfigError(f"{path}: not a {FORMAT} table (missing {missing or ['format']}); make one with "
                              "fairseq-prune-profile")
        return cls(data, path)

    def check(self, shape: Wav2Vec2Shape, device: str = "") -> None:
        """Refuse a table made for another architecture or (when ``device`` is given) another device."""
        want = architecture_key(shape)
        have = self.data["architecture"]
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            k = diff[0]
            raise ConfigError(f"{self.path}: made for another architecture ({k} {have.get(k)} in the table, "
                              f"{want.get(k)} in this model); profile this model with fairseq-prune-profile")
        if device and device != self.data["device"]:
            raise ConfigError(f"{self.path}: made on device {self.data['device']!r}, not {device!r} "
                              "(criterion.latency_device)")

    def blocks(self, sizes: LayerSizes) -> Dict[str, torch.Tensor]:
        """Milliseconds per block at ``sizes`` (entries may be tensors: expected counts keep their gradient)."""
        out, c_in = {}, 1
        for i, (layer, c) in enumerate(zip(self.conv, sizes.conv_channels)):
            out[f"conv.{i}"] = interp2(layer["c_in"], layer["c_out"], layer["ms"], c_in, c)
            c_in = c
        for n, (h, u) in enumerate(zip(sizes.attention_heads, sizes.ffn_units)):
            out[f"layers.{n}.attention"] = interp1(self.attention["sizes"], self.attention["ms"], h)
            out[f"layers.{n}.ffn"] = interp1(self.ffn["sizes"], self.ffn["ms"], u)
        scale = float(self.data.get("block_scale", 1.0))  # < 1 where the blocks timed alone overran the model
        return {k: v * scale for k, v in out.items()} if scale != 1.0 else out

    def predict(self, sizes: LayerSizes) -> torch.Tensor:
        """Predicted milliseconds of a model at ``sizes``: the blocks plus the rest."""
        return sum(self.blocks(sizes).values()) + float(self.data["rest_ms"])
