"""Option types the command lines share: integers held to their range by the parser, so that ``--batch-size 0`` or
``--num-workers -1`` ends in argparse's one ``PROG: error: argument ...`` line (exit 2) instead of being accepted or
failing later with a traceback from fairseq or torch."""
import argparse
from typing import Callable, Optional


def bounded_int(low: int, high: Optional[int] = None, note: str = "") -> Callable[[str], int]:
    """An argparse ``type`` that reads an integer in ``[low, high]`` (``high`` None: no upper bound); ``note`` is
    added to the message (e.g. what 0 means)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    if note:
        wanted += f" ({note})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse
