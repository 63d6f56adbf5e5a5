"""The plugin's refusals, and how ``fairseq-hydra-train`` reports them: one line.

Settings and files the plugin refuses raise a :class:`PluginError` (a ``ValueError``): :class:`ConfigError` for a
``model.`` / ``criterion.`` field, :class:`CheckpointError` (also importable from ``fairseq_prune.io.checkpoints``) for
a checkpoint file. The message names the field or file and says what to do.

Left alone, hydra prints such an error as a 30-60 line traceback followed by the message and a hint about
``HYDRA_FULL_ERROR``. :func:`one_line_errors` wraps the plugin's entry points that fairseq's ``train.py`` calls
(building the model and the criterion, loading the checkpoint to resume): under ``fairseq-hydra-train`` a
:class:`PluginError` raised inside becomes the single line ``fairseq-prune: error: <message>`` on stderr and exit
status 1. ``HYDRA_FULL_ERROR=1`` keeps hydra's full traceback; outside hydra (Python callers, tests) the error
propagates unchanged.
"""
import contextlib
import os
import re
import sys
from typing import Iterator


class PluginError(ValueError):
    """Bad settings or input that the plugin refuses; the message names the field or file."""


class ConfigError(PluginError):
    """A configuration field (``model.*``, ``criterion.*``) the plugin refuses, or a combination of them."""


class CheckpointError(PluginError):
    """A checkpoint that is missing, unreadable, or of the wrong kind (the message names the file)."""


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(error).split()) or type(error).__name__


def load_error_line(error: BaseException) -> str:
    """What went wrong in ``torch.load``, on one line: torch's paragraphs about ``weights_only`` (7 lines, terminal
    colour codes) shortened to the unpickler's own complaint, other messages to their first sentence."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = re.split(r"(?<=[^.])\.(?:\s|$)", line, maxsplit=1)[0].strip()
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _hydra_reports_errors() -> bool:
    """Whether this runs as a hydra job (``fairseq-hydra-train``) that prints errors itself, briefly."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for hydra's full traceback
        return False
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return False
    return HydraConfig.initialized()


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Under ``fairseq-hydra-train``: a :class:`PluginError` in the block ends the run with one
    ``fairseq-prune: error: <message>`` line on stderr and exit status 1 (``SystemExit``, which hydra and fairseq
    let through without printing). Elsewhere the error propagates unchanged."""
    try:
        yield
    except PluginError as e:
        if not _hydra_reports_errors():
            raise
        sys.stdout.flush()
        print(f"fairseq-prune: error: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
