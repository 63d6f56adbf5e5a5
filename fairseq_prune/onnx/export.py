"""ONNX export of a wav2vec2 CTC model (an exported ``wav2vec2_ctc_pruning`` model or fairseq's ``wav2vec_ctc``):
a traceable equivalent of its inference forward, the export itself, and the check that onnxruntime computes what
PyTorch computes.

fairseq's forward cannot be traced as it is: it branches on data (``padding_mask.any()``), pads the sequence to a
multiple with a helper that calls ``float.is_integer`` on a traced size, and writes the downsampled padding mask
with in-place indexing. :class:`TraceableCtc` computes the same thing with ops whose shapes follow the input:

* the frame padding mask is fairseq's (``_get_feat_extract_output_lengths`` on the unpadded lengths, in float32
  as fairseq does, or HuBERT's rule for a model of the ``hubert`` family; then "every frame after index
  ``length - 1``", that index taken modulo the frame count as fairseq's negative indexing does), computed for
  every batch; an all-False input mask gives no padded frame, which is what fairseq's ``padding_mask=None`` branch
  computes;
* the Transformer's padding to ``required_seq_len_multiple`` is left out: the frame it adds is a masked key for
  every query and is cut off afterwards, and no other op mixes positions, so it changes no output;
* the Transformer layers run our :class:`~fairseq_prune.modules.encoder_layer.PrunableEncoderLayer`'s own
  forward, the one that training and export run (its attention is ``scaled_dot_product_attention`` with the key
  padding mask, applied whenever it is traced); fairseq's layers are loaded into one of their sizes first
  (:func:`as_prunable_layer`); a layer without heads or FFN units adds its output bias only.

Everything else (the CNN's blocks, LayerNorms, positional convolution, projections) is the model's own modules,
called as they are (the CNN as fairseq's ``ConvFeatureExtractionModel.forward`` calls its blocks: our gated
extractor's forward takes sizes from the input for its LayerNorms, which the exporter cannot keep dynamic). :class:`TraceableCtc` is used only for export: it holds the model's modules, adds no parameters and
changes nothing in the model (fairseq's own layers are copied, not converted in place).
"""
import io
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Model
from torch import nn

from ..io.errors import PluginError
from ..modules.encoder_layer import PrunableEncoderLayer

#: onnxruntime must reproduce PyTorch within this (max abs over finite outputs) or nothing is written
CHECK_TOLERANCE = 1e-4
#: ONNX opset (LayerNormalization is an op from 17 on)
OPSET = 17
#: the oldest opset ``--opset`` accepts: torch exports ``scaled_dot_product_attention`` from opset 14 on
MIN_OPSET = 14


def max_opset() -> int:
    """The newest opset torch's TorchScript exporter (``dynamo=False``) writes: 23 with torch 2.9-2.14."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # a private module: a torch without it gets the opset every torch >= 2.3 writes
        return 20
    return int(ONNX_MAX_OPSET)
#: the check's inputs, in samples: one batch each. 16000 and 8000 are multiples of the 320-sample frame stride of
#: wav2vec2's CNN, 23457 and 13001 are not; the last batch is padded (with a padding-mask input only)
CHECK_BATCHES: Tuple[Tuple[int, ...], ...] = ((16000,), (23457,), (8000, 8000), (20000, 13001, 6001))


class OnnxExportError(PluginError):
    """A model that cannot be exported, or an ONNX model that does not reproduce PyTorch's outputs."""


def frame_padding(padding_mask: torch.Tensor, frames: torch.Tensor, convs: Sequence[Tuple[int, int]],
                  hubert: bool = False) -> torch.Tensor:
    """fairseq's frame padding mask, traceably (no Python number is taken from a traced size).

    Args:
        padding_mask: ``(B, S)`` bool, True at padded audio samples.
        frames: ``(B, T, ...)``, any tensor with the CNN's frames on dim 1 (only its shape is used).
        convs: ``(kernel, stride)`` per conv layer.
        hubert: HuBERT's rule for the unpadded frames (``ceil(n / (S // T))``, at most ``T``; see
            :func:`fairseq_prune.modules.hubert.hubert_frame_lengths`) instead of wav2vec2's conv formula.
    Returns:
        ``(B, T)`` bool, True at padded frames.
    """
    lengths = (1 - padding_mask.long()).sum(-1)
    index = torch.ones_like(frames[:, :, 0], dtype=torch.long).cumsum(-1) - 1  # (B, T): 0 .. T-1
    num_frames = index[:, -1] + 1  # (B,): T
    if hubert:
        chunk = torch.div(torch.ones_like(padding_mask, dtype=torch.long).sum(-1), num_frames, rounding_mode="floor")
        out = torch.minimum(torch.div(lengths + chunk - 1, chunk, rounding_mode="floor"), num_frames)
    else:
        out = lengths
        for kernel, stride in convs:  # fairseq's _conv_out_length: true division, i.e. float32
            out = torch.floor((out - kernel) / stride + 1)
    # fairseq marks frame output_lengths - 1 (a negative index counts from the end) and pads what follows it
    last = torch.remainder(out.long() - 1, num_frames)
    return index > last.unsqueeze(1)


def as_prunable_layer(layer: nn.Module) -> PrunableEncoderLayer:
    """The layer whose forward the export traces: one of ours as it is, or fairseq's
    ``TransformerSentenceEncoderLayer`` loaded into a :class:`PrunableEncoderLayer` of its sizes (the same
    parameter names; all heads and units, no gates), so that one forward serves training, export and ONNX."""
    layer = getattr(layer, "_checkpoint_wrapped_module", layer)
    if isinstance(layer, PrunableEncoderLayer):
        return layer
    attn = layer.self_attn
    out = PrunableEncoderLayer(attn.embed_dim, attn.num_heads, attn.head_dim, layer.fc1.out_features,
                               layer_norm_first=layer.layer_norm_first)
    out.activation_fn = layer.activation_fn  # fairseq's function, whatever its name
    out.load_state_dict(layer.state_dict(), strict=True)
    return out.eval()


def check_supported(model: nn.Module) -> Wav2Vec2Model:
    """The model's wav2vec2 module, or :class:`OnnxExportError` naming what :class:`TraceableCtc` does not cover."""
    w2v = getattr(getattr(model, "w2v_encoder", None), "w2v_model", None)
    if not isinstance(w2v, Wav2Vec2Model):
        raise OnnxExportError(f"not a wav2vec2 CTC model (its encoder holds {type(w2v).__name__})")
    cfg = w2v.cfg
    if cfg.get("layer_type", "transformer") != "transformer":
        raise OnnxExportError(f"layer_type={cfg.layer_type!r} is not supported (only 'transformer')")
    if w2v.input_quantizer is not None:
        raise OnnxExportError("wav2vec2 models with quantize_input=True are not supported")
    if w2v.crop_seq_to_multiple != 1:
        raise OnnxExportError(f"crop_seq_to_multiple={w2v.crop_seq_to_multiple} is not supported (only 1)")
    if any(k.endswith("log_alpha") for k in model.state_dict()):
        raise OnnxExportError("the model holds hard concrete gates: export it with fairseq-prune-export first")
    return w2v


class TraceableCtc(nn.Module):
    """Export-only equivalent of ``model.get_logits(model(source, padding_mask))`` (optionally log-softmaxed),
    for a wav2vec2 CTC model in eval mode, batch first.

    Inputs: ``source`` ``(B, S)`` float audio; ``padding_mask`` ``(B, S)`` bool, True at padding (optional).
    Outputs: ``(B, T, V)`` CTC scores (padded frames set to fairseq's ``[0, -inf, ...]``), ``(B,)`` int64 valid
    frames per utterance.
    """

    def __init__(self, model: nn.Module, log_probs: bool) -> None:
        super().__init__()
        self.w2v = check_supported(model)
        self.proj = model.w2v_encoder.proj
        self.log_probs = log_probs
        self.blank_weight = float(getattr(model, "blank_weight", 0.0))
        self.blank_mode = str(getattr(model, "blank_mode", "add"))
        self.convs = [(int(b[0].kernel_size[0]), int(b[0].stride[0])) for b in self.w2v.feature_extractor.conv_layers]
        self.hubert = getattr(self.w2v, "family", "wav2vec2") == "hubert"  # a HuBERT checkpoint as w2v_path
        self.layers = nn.ModuleList(as_prunable_layer(layer) for layer in self.w2v.encoder.layers)
        pad_row = torch.full((self.proj.out_features,), float("-inf"))
        pad_row[0] = 0.0  # what fairseq's get_logits writes into padded frames
        self.register_buffer("pad_row", pad_row, persistent=False)

    def encode(self, source: torch.Tensor,
               padding_mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(B, T, C)`` encoder output and ``(B, T)`` frame padding (``None`` without a padding-mask input)."""
        w2v = self.w2v
        features = source.unsqueeze(1)  # (B, 1, S)
        for block in w2v.feature_extractor.conv_layers:  # fairseq's CNN forward, without our gates (there are none)
            features = block(features)
        features = w2v.layer_norm(features.transpose(1, 2))  # (B, T, C_L)
        frames_pad = None
        if padding_mask is not None:
            frames_pad = frame_padding(padding_mask, features, self.convs, self.hubert)
        if w2v.post_extract_proj is not None:
            features = w2v.post_extract_proj(features)
        enc = w2v.encoder
        x = features
        if frames_pad is not None:
            x = x.masked_fill(frames_pad.unsqueeze(-1), 0.0)
        x = x + enc.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not enc.layer_norm_first:
            x = enc.layer_norm(x)
        x = x.transpose(0, 1)
        for layer in self.layers:
            x, _ = layer(x, self_attn_padding_mask=frames_pad)
        x = x.transpose(0, 1)
        if enc.layer_norm_first:
            x = enc.layer_norm(x)
        return x, frames_pad

    def forward(self, source: torch.Tensor,
                padding_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x, frames_pad = self.encode(source, padding_mask)
        logits = self.proj(x)  # (B, T, V)
        if self.blank_weight != 0:
            first = logits[..., :1]
            first = first + self.blank_weight if self.blank_mode == "add" else torch.full_like(first, self.blank_weight)
            logits = torch.cat([first, logits[..., 1:]], dim=-1)
        if frames_pad is not None:
            logits = torch.where(frames_pad.unsqueeze(-1), self.pad_row.to(logits.dtype), logits)
            lengths = (~frames_pad).long().sum(-1)
        else:
            lengths = torch.ones_like(logits[..., 0], dtype=torch.long).sum(-1)
        if self.log_probs:
            logits = F.log_softmax(logits.float(), dim=-1)
        return logits, lengths


@torch.no_grad()
def reference_emissions(model: nn.Module, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                        log_probs: bool) -> torch.Tensor:
    """What fairseq computes: ``(B, T, V)`` ``get_logits`` (log-softmaxed with ``log_probs``) of the model."""
    out = model.get_logits(model(source=source, padding_mask=padding_mask)).transpose(0, 1)
    return F.log_softmax(out.float(), dim=-1) if log_probs else out.float()


# ---------------------------------------------------------------------------------------------------------------
# export and check


@dataclass
class OnnxSpec:
    """What the ONNX graph takes and gives: ``log_probs`` (else logits) out; a ``padding_mask`` input or not."""

    log_probs: bool = True
    padding_mask_input: bool = True

    @property
    def input_names(self) -> List[str]:
        return ["source", "padding_mask"] if self.padding_mask_input else ["source"]

    @property
    def output_names(self) -> List[str]:
        return ["log_probs" if self.log_probs else "logits", "lengths"]


def _example_inputs(spec: OnnxSpec) -> Tuple[torch.Tensor, ...]:
    """Tracing inputs: 2 utterances, the second one padded (sizes other than 1 so that no dim is special)."""
    source, padding_mask = random_padded_batch((20000, 13001) if spec.padding_mask_input else (20000, 20000), 0)
    return (source, padding_mask) if spec.padding_mask_input else (source,)


def export_onnx(model: nn.Module, spec: OnnxSpec, metadata: Dict[str, str], opset: int = OPSET) -> bytes:
    """The serialised ONNX model of ``model`` (eval mode; traced, not changed) with ``metadata`` in its
    ``metadata_props``. Batch and audio length are dynamic. Weight norm (the positional convolution's) is
    computed in the graph from its parameters and constant-folded by the exporter."""
    import onnx

    if model.training:
        raise OnnxExportError("the model is in training mode (dropout, masking): call model.eval() first")
    traceable = TraceableCtc(model, spec.log_probs).eval()
    out_name = spec.output_names[0]
    dynamic_axes = {"source": {0: "batch", 1: "samples"}, out_name: {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    if spec.padding_mask_input:
        dynamic_axes["padding_mask"] = {0: "batch", 1: "samples"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        torch.onnx.export(
            traceable, _example_inputs(spec), buffer, dynamo=False, opset_version=opset,
            input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=dynamic_axes,
        )
    # torch's own argument checks (group norm's "more than 1 value per channel") read sizes without
    # shaping the graph; any other frozen value would make the graph wrong for other input shapes
    traced = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
              and not w.filename.endswith(os.path.join("torch", "nn", "functional.py"))]
    if traced:  # a value was frozen into the graph: its shapes would not follow the input
        w = traced[0]
        raise OnnxExportError(f"tracing froze a value into the graph: {w.message} ({w.filename}:{w.lineno})")
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, dict(metadata))
    return proto.SerializeToString()


@dataclass
class CheckReport:
    """Result of :func:`check_onnx`: the largest difference seen and the batches (lengths) it ran."""

    max_abs_diff: float
    batches: List[Tuple[int, ...]]


def random_padded_batch(lengths: Sequence[int], seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(B, max)`` random audio, zero after each utterance's length, and its ``(B, max)`` padding mask."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(len(lengths), max(lengths), generator=g)
    padding_mask = torch.arange(max(lengths)).unsqueeze(0) >= torch.tensor(list(lengths)).unsqueeze(1)
    return source.masked_fill(padding_mask, 0.0), padding_mask


def _compare(ours: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    """Max abs difference over finite entries; :class:`OnnxExportError` when shapes or ``±inf`` positions differ."""
    if ours.shape != ref.shape:
        raise OnnxExportError(f"onnxruntime's output has shape {tuple(ours.shape)}, PyTorch's {tuple(ref.shape)} "
                              f"({what})")
    finite = torch.isfinite(ref)
    if not torch.equal(finite, torch.isfinite(ours)) or not torch.equal(ours[~finite], ref[~finite]):
        raise OnnxExportError(f"onnxruntime's output and PyTorch's differ in their -inf (padded) entries ({what})")
    return float((ours[finite] - ref[finite]).abs().max()) if finite.any() else 0.0


def check_onnx(path: str, model: nn.Module, spec: OnnxSpec, batches: Sequence[Tuple[int, ...]] = CHECK_BATCHES,
               tolerance: float = CHECK_TOLERANCE, seed: int = 0) -> CheckReport:
    """Run the ONNX model at ``path`` with onnxruntime and ``model`` with PyTorch on random audio batches of the
    given lengths (zero-padded, with their padding mask; batches of unequal lengths only when the graph takes a
    padding mask); :class:`OnnxExportError` unless outputs agree within ``tolerance`` and lengths are equal."""
    from .runtime import ort_session

    try:
        session = ort_session(path, threads=0)
    except Exception as e:  # onnxruntime reports invalid graphs as its own exception types
        raise OnnxExportError(f"onnxruntime cannot load the exported model ({type(e).__name__}: {e})") from e
    worst, ran = 0.0, []
    for i, lengths in enumerate(batches):
        if len(set(lengths)) > 1 and not spec.padding_mask_input:
            continue
        source, padding_mask = random_padded_batch(lengths, seed + i)
        feeds = {"source": source.numpy()}
        if spec.padding_mask_input:
            feeds["padding_mask"] = padding_mask.numpy()
        out, lengths_out = (torch.from_numpy(a) for a in session.run(spec.output_names, feeds))
        ref = reference_emissions(model, source, padding_mask if spec.padding_mask_input else None, spec.log_probs)
        what = f"batch of {len(lengths)} utterance(s) of {', '.join(map(str, lengths))} samples"
        worst = max(worst, _compare(out, ref, what))
        ref_lengths = torch.isfinite(ref[..., 1]).long().sum(-1)  # padded frames are [0, -inf, ...]
        if not torch.equal(lengths_out, ref_lengths):
            raise OnnxExportError(f"onnxruntime's frame lengths {lengths_out.tolist()} differ from PyTorch's "
                                  f"{ref_lengths.tolist()} ({what})")
        if worst > tolerance:
            raise OnnxExportError(f"onnxruntime's output differs from PyTorch's by {worst:.2e} (more than "
                                  f"{tolerance:.0e}) on a {what}")
        ran.append(tuple(lengths))
    return CheckReport(worst, ran)
