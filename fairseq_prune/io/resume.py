"""Resuming from a damaged ``checkpoint_last.pt``: fall back to the newest intact checkpoint of the run.

fairseq writes a checkpoint atomically (``.tmp`` + rename) under its first name only, then *copies* it to the
others (``checkpoint_best.pt``, ``checkpoint_last.pt``, ...). A ``kill -9`` during such a copy leaves a 0-byte or
truncated ``checkpoint_last.pt``, and the next run (resuming from it by default) stops with a bare ``EOFError`` or
a zip error from ``torch.load``.

fairseq has no plugin hook before it loads the checkpoint to resume: ``fairseq_cli/train.py`` calls
``checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)`` right after building the model and the criterion.
:func:`install` (run when ``--user-dir`` imports the plugin) wraps that one function. The wrapper changes
nothing unless the run resumes from ``checkpoint_last.pt`` (``checkpoint.restore_file`` left at its default) and
that file is empty or a truncated zip archive (what ``torch.save`` writes). Then it resumes from the newest intact
``checkpoint*.pt`` of ``save_dir`` instead (by modification time: the copies of one save are made after the
original), saying so in one log line, or stops with one line when there is none.
"""
import copy
import functools
import glob
import logging
import os
from typing import Optional

from fairseq import checkpoint_utils

from .checkpoints import CheckpointError, checkpoint_damage
from .errors import one_line_errors

logger = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"


def newest_intact_checkpoint(save_dir: str) -> Optional[str]:
    """The most recently written ``checkpoint*.pt`` of ``save_dir`` other than ``checkpoint_last.pt`` that
    :func:`checkpoint_damage` finds complete."""
    found = [p for p in glob.glob(os.path.join(glob.escape(save_dir), "checkpoint*.pt"))
             if os.path.basename(p) != LAST and os.path.isfile(p)]
    for path in sorted(found, key=lambda p: (os.path.getmtime(p), p), reverse=True):
        if checkpoint_damage(path) is None:
            return path
    return None


def resume_cfg(cfg, suffix: str = ""):
    """``cfg`` (fairseq's ``CheckpointConfig``), or a copy whose ``restore_file`` names the newest intact
    checkpoint when the run would resume from a damaged ``checkpoint_last.pt``. Raises :class:`CheckpointError`
    when it is damaged and no intact checkpoint is left."""
    if cfg.restore_file != LAST or suffix:  # an explicit restore_file, or sharded checkpoints: fairseq's way
        return cfg
    last = os.path.join(cfg.save_dir, LAST)
    damage = checkpoint_damage(last) if os.path.isfile(last) else None
    if damage is None:
        return cfg
    fallback = newest_intact_checkpoint(cfg.save_dir)
    if fallback is None:
        raise CheckpointError(
            f"{last} is damaged ({damage}), as an interrupted copy leaves it, and {cfg.save_dir} holds no intact "
            "checkpoint*.pt to resume from instead: remove it to start the run afresh"
        )
    logger.warning(f"{last} is damaged ({damage}), as an interrupted copy leaves it; resuming from {fallback}, "
                   f"the newest intact checkpoint in {cfg.save_dir}")
    cfg = copy.deepcopy(cfg)
    cfg.restore_file = fallback
    cfg.finetune_from_model = None  # the run's own checkpoint: not a start model (fairseq refuses both at once)
    return cfg


def install() -> None:
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint`` with :func:`resume_cfg` (once per process)."""
    original = checkpoint_utils.load_checkpoint
    if getattr(original, "_fairseq_prune_resume", False):
        return

    @functools.wraps(original)
    def load_checkpoint(cfg, trainer, **passthrough_args):
        with one_line_errors():
            cfg = resume_cfg(cfg, getattr(trainer, "checkpoint_suffix", ""))
        return original(cfg, trainer, **passthrough_args)

    load_checkpoint._fairseq_prune_resume = True
    checkpoint_utils.load_checkpoint = load_checkpoint
