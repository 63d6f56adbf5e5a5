"""A CTC model's output as text: best-path units, fairseq's word strings, the blank and word-boundary symbols, and
the intent labels of spoken language understanding (SLURP). Used in training (the task's validation WER and
intent accuracy), by inference and by the ONNX metadata; imports nothing of the plugin, nor torch or fairseq at
import time.

Intent labels.
Convention (written by ``manifests/slurp.py``): a label line starts with the utterance's intent as one token
spelled as SLURP spells it, ``scenario_action`` in lower case (``alarm_set``, ``iot_hue_lightoff``), followed by
the upper-case transcript. Transcript words never contain lower-case letters or ``_``, so the first *word* of
a reference tells whether labels carry an intent, and the first word of a decoded hypothesis is its
predicted intent.
"""
import re
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # not imported at run time: this module stays light (the corpus scripts' tests load its file)
    import torch

INTENT_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")


def is_intent(word: str) -> bool:
    return bool(INTENT_RE.match(word))


def leading_intent(words: Sequence[str]) -> Optional[str]:
    """The intent a word sequence starts with, or ``None``."""
    return words[0] if words and is_intent(words[0]) else None


def intent_counts(pairs: Iterable[Tuple[Sequence[str], Sequence[str]]]) -> Tuple[int, int]:
    """``(correct, total)`` over (hypothesis words, reference words) pairs whose reference starts with an
    intent; a hypothesis is correct when its first word is that intent."""
    correct = total = 0
    for hyp, ref in pairs:
        intent = leading_intent(ref)
        if intent is None:
            continue
        total += 1
        correct += int(bool(hyp) and hyp[0] == intent)
    return correct, total


def strip_intent(words: Sequence[str]) -> Sequence[str]:
    """The transcript part of a label: the words after a leading intent token (all words if there is none)."""
    return words[1:] if leading_intent(words) is not None else words


# ---------------------------------------------------------------------------------------------- CTC units


def greedy_units(logits: "torch.Tensor", lengths: Optional["torch.Tensor"], blank: int) -> List[List[int]]:
    """Best-path CTC decoding.

    Args:
        logits: ``(B, T, V)`` scores (log-probs or logits: only the argmax matters).
        lengths: ``(B,)`` valid frames per utterance, or ``None`` (all ``T``).
        blank: index of the CTC blank.
    Returns:
        Per utterance, the unit indices after merging repeats and removing blanks.
    """
    best = logits.argmax(-1).cpu()
    out = []
    for b in range(best.size(0)):
        toks = best[b, : int(lengths[b])] if lengths is not None else best[b]
        toks = toks.unique_consecutive()
        out.append(toks[toks != blank].tolist())
    return out


def units_to_words(dictionary, units: List[int], post_process_type: str = "letter") -> List[str]:
    """Unit indices -> words, as fairseq's CTC criterion and ``infer.py`` do (``post_process``)."""
    from fairseq.data.data_utils import post_process

    return post_process(dictionary.string(units), post_process_type).split()


def target_words(dictionary, target: "torch.Tensor", post_process_type: str = "letter") -> List[str]:
    """A padded target row -> reference words (padding and eos removed)."""
    keep = (target != dictionary.pad()) & (target != dictionary.eos())
    return units_to_words(dictionary, target[keep].tolist(), post_process_type)


def blank_index(dictionary) -> int:
    """The CTC blank: ``<ctc_blank>`` if the dictionary has it, else ``<s>`` (index 0), as fairseq's decoders."""
    return dictionary.index("<ctc_blank>") if "<ctc_blank>" in dictionary.indices else dictionary.bos()


def silence_index(dictionary) -> int:
    """The word boundary token: ``<sep>``, else ``|``, else ``</s>``, as fairseq's decoders."""
    for symbol in ("<sep>", "|"):
        if symbol in dictionary.indices:
            return dictionary.index(symbol)
    return dictionary.eos()
