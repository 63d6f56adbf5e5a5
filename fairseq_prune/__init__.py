"""fairseq-prune: HJ-Pruning of wav2vec2 models (Peng et al., ICASSP 2023) as a fairseq ``--user-dir`` plugin.

Importing the package registers its model, task and criterion with fairseq, and makes fairseq's resume fall back
to the newest intact checkpoint when ``checkpoint_last.pt`` is damaged (:mod:`fairseq_prune.io.resume`).
"""
from .io import resume
from .io.checkpoints import register_safe_globals

register_safe_globals()
resume.install()

from .criterions import ctc_pruning  # noqa: E402,F401
from .models import wav2vec2_ctc_pruning  # noqa: E402,F401
from .tasks import audio_pruning  # noqa: E402,F401
