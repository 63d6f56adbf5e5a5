"""Output files that are complete or absent, and never left behind half-written.

* :func:`check_output` / :func:`check_output_folder`: refuse, before any work, an output that cannot be written
  (a folder given as a file, a file given as a folder, a device, a folder where no file can be created);
* :func:`new_temp_file`: the temporary files outputs are written to before they are renamed
  (:func:`fairseq_prune.io.checkpoints.atomic_outputs`) are named ``.tmp-<pid>@<host>-<8 random characters><suffix>``
  in the output's folder, so that a later run can tell which process made them;
* :func:`sweep_stale`: removes the temporary files of that exact form that a process of this host left when it was
  killed (``kill -9``, the OOM killer): those whose process no longer runs;
* :func:`sigterm_raises`: turns SIGTERM into an exception, so that the code that removes temporary files runs.
"""
import contextlib
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from typing import Iterator, List, Optional

from .errors import PluginError

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


class OutputError(PluginError):
    """An output that cannot be written (the message names it)."""


class Terminated(SystemExit):
    """Raised by :func:`sigterm_raises` in place of dying of SIGTERM; its code is 128 + the signal number."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def new_temp_file(folder: str, suffix: str) -> str:
    """Create an empty temporary file in ``folder`` named after this process; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}@{_host()}-", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def temp_file_pid(name: str) -> Optional[int]:
    """The process id in a file name made by :func:`new_temp_file` on this host, else ``None``."""
    pattern = rf"{re.escape(TEMP_PREFIX)}(\d+)@{re.escape(_host())}-[a-z0-9_]{{8}}(\.[A-Za-z0-9_]+)?"
    m = re.fullmatch(pattern, name)
    return int(m.group(1)) if m else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid: leave its files alone
        return True
    return True


def sweep_stale(folder: str) -> List[str]:
    """Remove the temporary files of :func:`new_temp_file`'s naming in ``folder`` whose process (on this host)
    no longer runs; nothing else is touched. Returns the removed paths."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        pid = temp_file_pid(name)
        path = os.path.join(folder, name)
        if pid is None or pid == os.getpid() or _running(pid) or os.path.islink(path) or not os.path.isfile(path):
            continue
        with contextlib.suppress(FileNotFoundError):  # another run swept it first
            os.remove(path)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left in %s by killed runs", len(removed), folder)
    return removed


def _check_creatable(path: str, folder: str) -> None:
    """A file can be created in ``folder`` or, when it does not exist yet, in the folder that will hold it."""
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: cannot be written, {folder} is not a folder")
    try:
        os.remove(new_temp_file(folder, ".probe"))
    except OSError as e:
        raise OutputError(f"{path}: cannot create files in {folder} ({e.strerror or e})") from e


def check_output(path: str, what: str, force: bool = True) -> None:
    """Refuse an output file ``what`` (an option's name) that cannot be written, before any work is done."""
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder; {what} needs a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise OutputError(f"{path}: exists and is not a regular file; {what} needs a file name")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    _check_creatable(path, os.path.dirname(os.path.abspath(path)))


def check_output_folder(path: str, what: str) -> None:
    """Refuse an output folder ``what`` (an option's name) that cannot be written, before any work is done."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{path}: {what} is a file, not a folder")
    _check_creatable(path, os.path.abspath(path))


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """An ``OSError`` while writing output ``path`` (to its temporary file: its message would name that file)
    becomes one line naming ``path``."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in this process (cleanup code runs) instead of ending
    it at once. Forked children (data-loading workers) that inherit the handler still die of the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
