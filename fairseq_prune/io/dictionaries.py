"""Where the dictionary of a checkpoint is, for every command that needs one (export, ONNX, decoding's checks):

* the dictionary it stores (:func:`stored_symbols`): ``target_dictionary``, which fairseq-prune-export writes, or
  the ``task_state`` fairseq's trainer saves (fairseq's loader builds the model with that one);
* else ``dict.{labels}.txt`` in its training run's ``task.data`` folder, else beside the checkpoint file
  (:func:`find_dictionary_file`): a shipped model such as ``assets/start_model/`` carries its dictionary there,
  while ``task.data`` names a folder of the machine that trained it.

A command that finds none says where it looked (:func:`looked_in`)."""
import os
from typing import Any, Dict, List, Optional, Tuple


def stored_symbols(state: Dict[str, Any]) -> Optional[Tuple[List[str], str]]:
    """``(symbols, where)`` of the dictionary checkpoint ``state`` stores (fairseq-prune-export's, naming the file
    it was read from; else the trainer's ``task_state``), or ``None`` when it stores none."""
    exported = state.get("target_dictionary", None)
    if exported:
        return list(exported["symbols"]), str(exported.get("file") or "stored in the checkpoint")
    task_state = state.get("task_state", None)
    trained = task_state.get("target_dictionary", None) if isinstance(task_state, dict) else None
    if trained is not None and hasattr(trained, "symbols"):
        return list(trained.symbols), "stored in its task_state"
    return None


def dictionary_candidates(path: Optional[str], state: Dict[str, Any], labels: str) -> List[str]:
    """Where ``dict.{labels}.txt`` of checkpoint ``path`` may be, in order: its ``task.data`` folder, then the
    checkpoint's own folder (when ``path`` is given)."""
    name = f"dict.{labels}.txt"
    data = state["cfg"].task.get("data", None)
    folders = ([str(data)] if data else []) + ([os.path.dirname(os.path.abspath(path))] if path else [])
    out: List[str] = []
    for folder in folders:
        candidate = os.path.join(folder, name)
        if os.path.abspath(candidate) not in map(os.path.abspath, out):
            out.append(candidate)
    return out


def find_dictionary_file(path: Optional[str], state: Dict[str, Any], labels: str) -> Tuple[Optional[str], List[str]]:
    """``(the first of the candidates that exists, or None; all candidates)`` (:func:`dictionary_candidates`)."""
    candidates = dictionary_candidates(path, state, labels)
    return next((c for c in candidates if os.path.isfile(c)), None), candidates


def looked_in(candidates: List[str]) -> str:
    """``'looked for dict.ltr.txt in A, B'``: the folders :func:`dictionary_candidates` named, in order."""
    if not candidates:
        return "its config names no task.data folder"
    names = " / ".join(sorted({os.path.basename(c) for c in candidates}))
    return f"looked for {names} in {', '.join(os.path.dirname(c) or '.' for c in candidates)}"
