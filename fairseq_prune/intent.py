"""Intent labels for spoken language understanding (SLURP) with a CTC model.

Convention (written by ``manifests/slurp.py``): a label line starts with the utterance's intent as one token
spelled as SLURP spells it, ``scenario_action`` in lower case (``alarm_set``, ``iot_hue_lightoff``), followed by
the upper-case transcript. Transcript words never contain lower-case letters or ``_``, so the first *word* of
a reference tells whether labels carry an intent, and the first word of a decoded hypothesis is its
predicted intent.
"""
import re
from typing import Iterable, Optional, Sequence, Tuple

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
