"""Quiet start-up of the plugin's command lines. Every command used to print notices about torch and fairseq
before its one line of output or error, none of them about the user's input:

* torch's ``FutureWarning`` that ``torch.jit.script`` is deprecated (fairseq scripts modules when imported);
* fairseq's INFO line "Please install tensorboardX" (its text-to-speech task, imported with every task);
* torch's ``UserWarning`` that ``pin_memory`` is set but no accelerator is found (fairseq's data loader on CPU);
* torch's ``FutureWarning`` that ``torch.nn.utils.weight_norm`` is deprecated (fairseq's positional convolution,
  each time a model is built).

:func:`quiet_start`, called by the package's ``__init__`` before fairseq is imported, hides them when the program
is one of ours (``fairseq-prune-*``, ``python -m fairseq_prune...``, the corpus scripts
``python manifests/*.py``) unless the user asks for warnings: ``--verbose`` on the command line (not the corpus
scripts'), or ``PYTHONWARNINGS`` / ``-W``. Under fairseq's own commands (``fairseq-hydra-train --user-dir``) and in
other programs that import the plugin nothing changes.
"""
import logging
import os
import sys
import warnings
from typing import List, Optional

#: (category, start of the message) of each hidden warning
NOTICES = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (FutureWarning, r"`torch\.nn\.utils\.weight_norm` is deprecated"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
)
#: the logger of fairseq's "Please install tensorboardX" line
TENSORBOARDX_LOGGER = "fairseq.tasks.text_to_speech"
#: what fairseq's data iterators put in PYTHONWARNINGS (fairseq/data/iterators.py; not a request for warnings)
FAIRSEQ_WARNING_OPTION = "ignore:semaphore_tracker:UserWarning"
#: how our console scripts are named (setup.py)
COMMAND_PREFIX = "fairseq-prune-"
#: the corpus scripts' folder, installed beside the plugin's (setup.py's packages)
MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))), "manifests")


def our_command(argv: List[str]) -> bool:
    """Whether the program is one of the plugin's commands: a ``fairseq-prune-*`` console script, a corpus script
    (``manifests/*.py``), or ``python -m`` of a module whose package imports the plugin (while the module is being
    found, ``sys.argv[0]`` is ``-m``)."""
    prog = os.path.basename(argv[0]) if argv else ""
    script_folder = os.path.dirname(os.path.realpath(argv[0])) if prog.endswith(".py") else ""
    return prog.startswith(COMMAND_PREFIX) or prog == "-m" or script_folder == MANIFESTS


def user_warning_options() -> list:
    """The ``-W`` / ``PYTHONWARNINGS`` entries the user gave: not fairseq's own, which its epoch iterators write into
    ``PYTHONWARNINGS`` (so for every later child process) when a data loader has workers."""
    return [w for w in sys.warnoptions if w != FAIRSEQ_WARNING_OPTION]


def quiet_start(argv: Optional[List[str]] = None) -> bool:
    """Hide :data:`NOTICES` and the tensorboardX line in one of our commands, unless ``--verbose`` or
    ``PYTHONWARNINGS``/``-W`` ask for warnings; returns whether it did."""
    argv = sys.argv if argv is None else argv
    if not our_command(argv) or "--verbose" in argv[1:] or user_warning_options():
        return False
    for category, message in NOTICES:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.getLogger(TENSORBOARDX_LOGGER).setLevel(logging.WARNING)
    return True


def add_verbose_option(parser) -> None:
    """``--verbose``: what :func:`quiet_start` reads (from ``sys.argv``, before the parser runs)."""
    parser.add_argument("--verbose", action="store_true",
                        help="show the notices torch and fairseq print at start-up (hidden by default; "
                        "PYTHONWARNINGS shows them too)")
