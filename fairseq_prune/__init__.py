"""fairseq-prune: HJ-Pruning of wav2vec2 models (Peng et al., ICASSP 2023) as a fairseq ``--user-dir`` plugin.

Importing the package registers its model, task and criterion with fairseq, and makes fairseq's resume fall back
to the newest intact checkpoint when ``checkpoint_last.pt`` is damaged (:mod:`fairseq_prune.io.resume`).
Run as one of its commands, it first hides the notices torch and fairseq print at start-up
(:mod:`fairseq_prune.cli.startup`; ``--verbose`` or ``PYTHONWARNINGS`` shows them).
"""
from .cli.startup import quiet_start

quiet_start()  # before fairseq is imported: its import prints two of them

from .io import resume  # noqa: E402
from .io.checkpoints import register_safe_globals  # noqa: E402

register_safe_globals()
resume.install()

from .criterions import ctc_pruning  # noqa: E402,F401
from .models import wav2vec2_ctc_pruning  # noqa: E402,F401
from .tasks import audio_pruning  # noqa: E402,F401
