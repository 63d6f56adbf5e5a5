"""Reading fairseq's JSON log lines (``common.log_format=json``), as ``fairseq-hydra-train`` prints them::

    [2026-12-03 16:35:02,731][train_inner][INFO] - {"epoch": 2, "update": 1.25, "loss": "233.501", ...}
    [2026-12-03 16:35:03,248][dev-clean][INFO] - {"epoch": 3, "dev-clean_loss": "63.218", ...}

The tag is ``train_inner`` for the records of every log interval, ``train`` for an epoch's (keys prefixed
``train_``), and the subset's name for a validation (keys prefixed with it: ``dev-clean_wer``). Other lines,
the configuration that fairseq prints as a Python dict among them, are not records. Pure functions of text."""
import json
import re
from typing import Dict, Iterable, List, Optional, Tuple

_RECORD = re.compile(r"^\[[^\]]*\]\[(?P<tag>[^\]]+)\]\[INFO\] - (?P<json>\{\".*\})\s*$")

#: the budget terms of the pruning criterion: one per budget ("exp_ratio", ...), or two with sep_size
#: ("exp_ratio_cnn", "exp_ratio_transformer", ...)
_BUDGET = [(f"{key}{suffix}", f"{label}{suffix}") for suffix in ("", "_cnn", "_transformer")
           for key, label in (("exp_ratio", "E[budget]"), ("det_ratio", "budget"), ("target", "target"))]
#: (key, label) of what a progress line shows, in its order
PROGRESS_KEYS = [("ctc_loss", "ctc"), ("loss", "loss"), ("wer", "WER"), ("intent_acc", "intent"), *_BUDGET,
                 ("det_macs_ratio", "MACs")]


def parse_record(line: str) -> Optional[Tuple[str, dict]]:
    """``(tag, record)`` of a JSON log line, None for any other line."""
    m = _RECORD.match(line.rstrip("\n"))
    if m is None:
        return None
    try:
        return m.group("tag"), json.loads(m.group("json"))
    except json.JSONDecodeError:
        return None


def records(lines: Iterable[str], tag: str) -> List[dict]:
    """Every record logged under ``tag`` (``train_inner``, ``train``, ``valid``, a subset's name), in order."""
    out = []
    for line in lines:
        parsed = parse_record(line)
        if parsed is not None and parsed[0] == tag:
            out.append(parsed[1])
    return out


def last_records(lines: Iterable[str]) -> Dict[str, Optional[dict]]:
    """The last ``train_inner`` record (as ``train``) and the last ``valid`` one of a log, as logged."""
    found: Dict[str, Optional[dict]] = {"train": None, "valid": None}
    for line in lines:
        parsed = parse_record(line)
        if parsed is not None and parsed[0] in ("train_inner", "valid"):
            found["train" if parsed[0] == "train_inner" else "valid"] = parsed[1]
    return found


def progress(record: dict) -> Optional[Tuple[str, Dict[str, str]]]:
    """``("train", record)`` for a training interval, ``("valid", record without its subset prefix)`` for a
    validation, None for an epoch's training summary (prefix ``train``) or a record without an update count."""
    if "num_updates" in record:
        return "train", record
    prefix = next((k[: -len("_num_updates")] for k in record if k.endswith("_num_updates")), None)
    if prefix is None or prefix == "train":
        return None
    start = len(prefix) + 1
    return "valid", {k[start:]: v for k, v in record.items() if k.startswith(prefix + "_")}


def progress_parts(values: Dict[str, str], updates: int) -> List[str]:
    """The pieces of a progress line: the update out of ``updates``, the losses (the CTC one in place of the total
    when there is one), WER, intent accuracy, the budget terms and the MAC ratio that ``values`` holds."""
    parts = [f"update {values.get('num_updates')}/{updates}"]
    for key, label in PROGRESS_KEYS:
        if values.get(key) is not None and not (key == "loss" and values.get("ctc_loss") is not None):
            parts.append(f"{label} {values.get(key)}")
    return parts


def progress_line(line: str, updates: int) -> Optional[Tuple[str, str]]:
    """``(kind, "update N/M, ctc ..., WER ...")`` for a log line of training progress or validation, None
    for any other line."""
    parsed = parse_record(line)
    if parsed is None:
        return None
    found = progress(parsed[1])
    if found is None:
        return None
    kind, values = found
    return kind, ", ".join(progress_parts(values, updates))
