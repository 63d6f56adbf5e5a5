"""Reading the checkpoints users point ``model.w2v_path`` at, and writing checkpoints safely."""
import argparse
import contextlib
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig, open_dict

from ..layer_sizes import LayerSizes, is_gate_key
from .errors import CheckpointError, load_error_line
from .safe_output import check_output, claim, commit, ignore_file_size_signal, new_temp_file, output_target, writing

#: fairseq model names whose checkpoints ``model.w2v_path`` accepts: pre-training checkpoints of wav2vec2 and HuBERT,
#: fine-tuned CTC ones (``wav2vec2_ctc_pruning``: one without gates, i.e. trained with the dense recipe or written by
#: fairseq-prune-export; its state-dict keys are those of ``wav2vec_ctc``, and ``hubert_ctc`` has them too)
PRETRAINED_KINDS = ("wav2vec2", "hubert")
FINETUNED_KINDS = ("wav2vec_ctc", "hubert_ctc", "wav2vec2_ctc_pruning")
SUPPORTED_KINDS = "wav2vec2, wav2vec_ctc, hubert, hubert_ctc, or a wav2vec2_ctc_pruning one without gates"
#: the per-layer size fields of an exported model's ``cfg.model`` (and keys of its ``pruning_summary``)
PER_LAYER_SIZES = LayerSizes.names()
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."
#: (path, w2v_args, arg_overrides, weights) -> the same model as a wav2vec2 config and wav2vec2 weights
FamilyAdapter = Callable[[str, DictConfig, Optional[Dict[str, Any]], Dict[str, torch.Tensor]],
                         Tuple[DictConfig, Dict[str, torch.Tensor]]]
#: model families other than wav2vec2 and how their checkpoints read as wav2vec2's: registered by the family's
#: module (:mod:`fairseq_prune.modules.hubert`), so that reading checkpoints knows no model family
FAMILY_ADAPTERS: Dict[str, FamilyAdapter] = {}


def register_family(name: str, adapter: FamilyAdapter) -> None:
    """Let ``model.w2v_path`` read pre-training checkpoints whose ``model._name`` is ``name`` through ``adapter``."""
    FAMILY_ADAPTERS[name] = adapter
_PROJ_PREFIX = "w2v_encoder.proj."


def register_safe_globals() -> None:
    """Let ``torch.load(weights_only=True)`` (the default since torch 2.6, used by fairseq's own loader for
    resuming and by ``infer.py``) read fairseq checkpoints, which pickle a few plain classes."""
    from fairseq.data.dictionary import Dictionary

    torch.serialization.add_safe_globals([argparse.Namespace, Dictionary])


def read_checkpoint(path: str, arg_overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """fairseq's ``load_checkpoint_to_cpu`` with clear errors. ``state["cfg"]`` is always a DictConfig
    (old ``args``-style checkpoints are converted)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    damage = checkpoint_damage(path)
    if damage is not None:
        raise CheckpointError(f"{path}: not a readable fairseq checkpoint ({damage})")
    register_safe_globals()
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
    except Exception as e:  # torch/pickle/omegaconf errors: report which file, then the cause (one line)
        raise CheckpointError(f"{path}: not a readable fairseq checkpoint ({load_error_line(e)})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    if state.get("cfg") is None:
        if state.get("args") is None:
            raise CheckpointError(f"{path}: fairseq checkpoint without 'cfg' or 'args'")
        state["cfg"] = convert_namespace_to_omegaconf(state["args"])
    return state


def checkpoint_damage(path: str) -> Optional[str]:
    """Why ``path`` is not a file ``torch.save`` finished writing (empty, or a zip archive whose end is missing, as
    an interrupted copy leaves them), or ``None`` when it looks complete. Cheap: reads the zip directory, not the
    tensors. A file in torch's old (non-zip) format is left to ``torch.load``."""
    size = os.path.getsize(path)
    if size == 0:
        return "empty: 0 bytes"
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"truncated: {size} bytes, the end of its zip archive is missing"


def model_name(state: Dict[str, Any]) -> str:
    model_cfg = state["cfg"].get("model", None)
    return str(model_cfg.get("_name", None)) if model_cfg is not None else "None"


@dataclass
class W2vSource:
    """What ``model.w2v_path`` provides: the pre-training config (fairseq's ``w2v_args``), the weights of the
    ``Wav2Vec2Model`` (its own key names), and, from a fine-tuned CTC checkpoint, the output projection."""

    path: str
    kind: str
    w2v_args: DictConfig
    model_state: Dict[str, torch.Tensor]
    proj_state: Optional[Dict[str, torch.Tensor]] = None
    #: an exported (pruned) model's per-layer sizes; ``None`` for a dense model
    sizes: Optional[LayerSizes] = None


def load_w2v_source(path: str, arg_overrides: Optional[Dict[str, Any]] = None) -> W2vSource:
    """Read a wav2vec2 or HuBERT pre-training checkpoint (``cfg`` or old ``args`` style) or a fine-tuned CTC
    checkpoint (``wav2vec_ctc``, ``hubert_ctc``, a gate-free ``wav2vec2_ctc_pruning``). ``arg_overrides`` (dropouts,
    masking, ...) are applied as fairseq's ``Wav2VecEncoder`` does. A HuBERT model comes out as a wav2vec2 source
    whose ``w2v_args.model._name`` is ``hubert`` (see :mod:`fairseq_prune.modules.hubert`)."""
    state = read_checkpoint(path, arg_overrides)
    name = model_name(state)
    sizes = None
    proj_state = None
    if name in PRETRAINED_KINDS:
        w2v_args = state["cfg"]
        model_state = state["model"]
    elif name in FINETUNED_KINDS:
        if name == "wav2vec2_ctc_pruning":
            sizes = _gate_free_sizes(path, state)
        w2v_args = state["cfg"].model.get("w2v_args", None)
        if w2v_args is None:
            raise CheckpointError(f"{path}: {name} checkpoint without model.w2v_args")
        if isinstance(w2v_args, argparse.Namespace):
            w2v_args = convert_namespace_to_omegaconf(w2v_args)
        model_state = {
            k[len(_FINETUNED_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(_FINETUNED_PREFIX)
        }
        proj_state = {k[len(_PROJ_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(_PROJ_PREFIX)}
        proj_state = proj_state or None
    else:
        raise CheckpointError(
            f"{path}: model.w2v_path needs a wav2vec2 pre-training or fine-tuned CTC checkpoint, or a HuBERT one "
            f"(fairseq model {SUPPORTED_KINDS}); this one holds model {name!r}"
        )
    inner = w2v_args.model.get("_name", None)
    if inner not in PRETRAINED_KINDS:
        raise CheckpointError(
            f"{path}: its pre-training config describes model {inner!r}; supported: {', '.join(PRETRAINED_KINDS)}"
        )
    if inner != "wav2vec2":
        if inner not in FAMILY_ADAPTERS:  # the package registers every family of PRETRAINED_KINDS on import
            raise CheckpointError(f"{path}: no adapter registered for model family {inner!r}")
        w2v_args, model_state = FAMILY_ADAPTERS[inner](path, w2v_args, arg_overrides, model_state)
    with open_dict(w2v_args):
        w2v_args.criterion = None
        w2v_args.lr_scheduler = None
    return W2vSource(path, name, w2v_args, model_state, proj_state, sizes)


def _gate_free_sizes(path: str, state: Dict[str, Any]) -> Optional[LayerSizes]:
    """A ``wav2vec2_ctc_pruning`` checkpoint is a start point only without gates (a pruning run in progress
    continues with ``checkpoint.restore_file``, or is exported first). Returns its per-layer sizes: those of an
    exported model, ``None`` for a dense one."""
    gates = [k for k in state["model"] if is_gate_key(k)]
    if gates:
        raise CheckpointError(
            f"{path}: this wav2vec2_ctc_pruning checkpoint holds hard concrete gates ({gates[0]}, ...): continue "
            "its run with checkpoint.restore_file, or export it with fairseq-prune-export"
        )
    sizes = LayerSizes.from_cfg(state["cfg"].model)
    return sizes if sizes.as_dict(skip_empty=True) else None


def new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the current umask (``mkstemp`` gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str], suffixes: Optional[Sequence[str]] = None,
                   force: bool = True) -> Iterator[List[str]]:
    """Yields one temporary path per output to write to, in the folder of the file it becomes (made if missing;
    for a symlink, its target's: the link stays a link), named by :func:`~fairseq_prune.io.safe_output.new_temp_file`
    and ending in ``suffixes`` or the output's extension. The one output rule of :mod:`~fairseq_prune.io.safe_output`
    holds: each output is claimed for the block (a second writer refuses) and checked again when it is committed
    (no FIFO, device or socket is ever replaced; without ``force``, no file that appeared meanwhile). When the
    block succeeds every file gets the permissions ``open()`` would give and is committed; when it fails every
    temporary file is removed, and when a commit fails the outputs already committed are removed too: a reader
    never sees a half-written file, and the outputs appear together or not at all."""
    suffixes = suffixes or [os.path.splitext(p)[1] for p in paths]
    ignore_file_size_signal()
    folders = [os.path.dirname(os.path.abspath(output_target(p, "the output"))) for p in paths]
    tmps: List[str] = []
    made: List[str] = []  # folders this call created, removed again (when empty) on failure
    try:
        for folder in folders:
            made.extend(_make_folders(folder))
        with claim(paths):
            committed: List[str] = []
            try:
                tmps.extend(new_temp_file(folder, suffix) for folder, suffix in zip(folders, suffixes))
                yield tmps
                mode = new_file_mode()
                for tmp, path in zip(tmps, paths):
                    os.chmod(tmp, mode)
                    committed.append(commit(tmp, path, force))
            except BaseException:
                for target in committed:  # still claimed: no other run can have put its file there
                    with contextlib.suppress(OSError):
                        os.remove(target)
                raise
    except BaseException:
        _remove_temps(tmps)
        for folder in reversed(made):  # after the lock files beside the outputs are gone
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    finally:
        _remove_temps(tmps)


def _make_folders(folder: str) -> List[str]:
    """``os.makedirs(folder)``; returns the folders it created, outermost first."""
    missing = []
    while not os.path.exists(folder):
        missing.insert(0, folder)
        folder = os.path.dirname(folder)
    for f in missing:
        os.makedirs(f, exist_ok=True)
    return missing


def _remove_temps(tmps: List[str]) -> None:
    for tmp in tmps:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_output(path: str, suffix: str, force: bool = True) -> Iterator[str]:
    """:func:`atomic_outputs` of one file: yields the temporary path to write ``path`` to."""
    with atomic_outputs([path], [suffix], force) as (tmp,):
        yield tmp


def save_atomic(obj: Any, path: str, force: bool = False) -> None:
    """``torch.save`` through :func:`atomic_output`, under the one output rule: an existing file is only replaced
    when ``force`` is set (never a FIFO or a device; a symlink is written through); a write that fails (a full
    disk, ``ulimit -f``) is one :class:`~fairseq_prune.io.safe_output.OutputError` line, and the old file stays."""
    check_output(path, "the output", force)
    with writing(path), atomic_output(path, ".pt", force) as tmp, writing(path, tmp):
        torch.save(obj, tmp)
