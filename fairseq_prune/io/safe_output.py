"""Output files that are complete or absent, never left behind half-written, and never put where they replace
what is not ours: the one output rule of every command and every file it writes.

* :func:`check_output` / :func:`check_output_folder`: refuse, before any work, an output that cannot be written
  (a folder given as a file, a file given as a folder, a folder where no file can be created), one that exists
  without ``--force``, and one that exists and is not a regular file (a FIFO, a device, a socket, or a link to one
  or into ``/proc/*/fd`` like ``/dev/stdout``): those are never replaced; ``-`` streams to stdout where allowed;
* :func:`output_target`: a symlink to a regular file is written through: its target is replaced, the link stays;
* :func:`claim`: a lock file beside each output, held from the checks to the commit, so that a second writer of
  the same file refuses instead of both reporting success; :func:`commit` checks again when the file is put in
  place (without ``--force`` it never replaces a file that appeared meanwhile);
* :func:`writing`: a write that fails (a full disk, a quota, the file-size limit of ``ulimit -f``, also as
  ``torch.save``'s "unexpected pos") becomes one line naming the output and the cause;
* :func:`new_temp_file`: the temporary files outputs are written to before they are renamed
  (:func:`fairseq_prune.io.checkpoints.atomic_outputs`) are named ``.tmp-<pid>@<host>-<8 random characters><suffix>``
  in the output's folder, so that a later run can tell which process made them;
* :func:`sweep_stale`: removes the temporary files of that exact form that a process of this host left when it was
  killed (``kill -9``, the OOM killer): those whose process no longer runs, and lock files no process holds;
* SIGTERM as an exception, so that the code that removes temporary files runs: :mod:`fairseq_prune.io.signals`;
  whole output folders written all or nothing: :mod:`fairseq_prune.io.staging`.
"""
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import resource
import signal
import socket
import stat
import tempfile
import threading
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .errors import PluginError

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
#: the lock file beside an output being written is named this, then the output's name (see :func:`claim`)
LOCK_PREFIX = TEMP_PREFIX + "lock-"
#: what a destination that exists and is not a regular file is, by its mode: never replaced
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))
#: where links lead to the files processes hold open (``/dev/stdout`` -> ``/proc/self/fd/1``): replacing the file
#: behind one would pull it from under the process writing it (a shell's ``> log``)
_PROCESS_FILES = ("/proc/", "/dev/fd/")


class OutputError(PluginError):
    """An output that cannot be written (the message names it)."""


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
    no longer runs, and lock files of :func:`lock_path`'s naming that no process holds; nothing else is touched.
    Returns the removed paths."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        pid = temp_file_pid(name)
        path = os.path.join(folder, name)
        if name.startswith(LOCK_PREFIX):
            if _remove_free_lock(path):
                removed.append(path)
            continue
        if pid is None or pid == os.getpid() or _running(pid) or os.path.islink(path) or not os.path.isfile(path):
            continue
        with contextlib.suppress(FileNotFoundError):  # another run swept it first
            os.remove(path)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left in %s by killed runs", len(removed), folder)
    return removed


def _remove_free_lock(lock: str) -> bool:
    """Remove lock file ``lock`` if no process holds it (its holder was killed); removed before it is unlocked,
    as :func:`_release` does."""
    if lock in _HELD or os.path.islink(lock) or not os.path.isfile(lock):
        return False
    with contextlib.suppress(OSError):
        fd = _try_lock(lock)
        if fd is not None:
            try:
                os.remove(lock)
                return True
            finally:
                os.close(fd)
    return False


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


def _link_hops(path: str) -> List[str]:
    """The paths a chain of symlinks starting at ``path`` passes through, ``path`` first (not resolved further)."""
    hops = [os.path.abspath(path)]
    while os.path.islink(hops[-1]) and len(hops) <= 40:
        hops.append(os.path.normpath(os.path.join(os.path.dirname(hops[-1]), os.readlink(hops[-1]))))
    return hops


def output_target(path: str, what: str, stream: bool = False) -> str:
    """The regular file a write to output ``path`` creates or replaces: ``path`` itself or, for a symlink, the file
    it leads to (written through: the link stays a link). An :class:`OutputError` for what is never replaced: a
    folder, a FIFO, a device, a socket, a link to one of them or into a process's open files (``/dev/stdout``).
    ``stream``: the option takes ``-`` for stdout (the message says so)."""
    hint = f"{what} needs a regular file name" + (" (- writes to stdout)" if stream else "")
    hops = _link_hops(path)
    special = next((h for h in hops if h.startswith(_PROCESS_FILES)), None) if len(hops) > 1 else None
    if special is not None:
        raise OutputError(f"{path}: leads to {special}, a file a process holds open (like /dev/stdout), which is "
                          f"never replaced; {hint}")
    try:
        mode: Optional[int] = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # (a symlink to) a file that does not exist yet; a folder that is a file: see _check_creatable
    except OSError as e:  # a symlink loop, a name too long
        raise OutputError(f"{path}: cannot be written ({e.strerror or e})") from e
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a folder; {what} needs a file name")
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "of another kind")
        raise OutputError(f"{path}: exists and is not a regular file ({kind}), which is never replaced; {hint}")
    return os.path.realpath(path) if len(hops) > 1 else path


def check_output(path: str, what: str, force: bool = True, stream: bool = False) -> str:
    """Refuse an output file ``what`` (an option's name) that cannot be written, before any work is done: see
    :func:`output_target`; an existing file needs ``force``; its folder (or the nearest that exists) must take new
    files. Returns the file that will be written, or ``-`` (stdout) where ``stream`` allows it."""
    if stream and path == "-":
        return path
    target = output_target(path, what, stream)
    if os.path.exists(target) and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    _check_creatable(path, os.path.dirname(os.path.abspath(target)))
    return target


def check_output_folder(path: str, what: str) -> None:
    """Refuse an output folder ``what`` (an option's name) that cannot be written, before any work is done."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{path}: {what} is a file, not a folder")
    _check_creatable(path, os.path.abspath(path))


#: lock files this process holds: path -> (open descriptor, how many claims hold it)
_HELD: Dict[str, Tuple[int, int]] = {}
_HELD_GUARD = threading.Lock()


def lock_path(target: str) -> str:
    """The lock file beside output file ``target`` (see :func:`claim`)."""
    folder, name = os.path.split(os.path.abspath(target))
    if len(name) > 200:  # keep the lock's name under the file system's limit
        name = hashlib.sha1(name.encode()).hexdigest()
    return os.path.join(folder, LOCK_PREFIX + name)


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced since it was opened)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _try_lock(lock: str) -> Optional[int]:
    """An open descriptor of ``lock`` with an exclusive ``flock``, or ``None`` when another process holds it. A lock
    file removed between the open and the lock (its holder released it, a sweep took it) is made again."""
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock):
            return fd
        os.close(fd)
    raise OSError(errno.EAGAIN, "the lock file keeps being replaced", lock)


def _acquire(lock: str, path: str) -> None:
    with _HELD_GUARD:
        if lock in _HELD:  # claimed before by this process (a command holds it from its checks on)
            fd, claims = _HELD[lock]
            _HELD[lock] = (fd, claims + 1)
            return
        try:
            fd = _try_lock(lock)
        except OSError as e:
            raise OutputError(f"{path}: cannot lock it ({lock}: {e.strerror or e})") from e
        if fd is None:
            raise OutputError(f"{path}: another run is writing it now ({lock} is locked); try again once it ends")
        _HELD[lock] = (fd, 1)


def _release(lock: str) -> None:
    with _HELD_GUARD:
        fd, claims = _HELD.pop(lock)
        if claims > 1:
            _HELD[lock] = (fd, claims - 1)
            return
        with contextlib.suppress(OSError):  # removed before it is unlocked: a waiter then sees it gone
            os.remove(lock)
        os.close(fd)


@contextlib.contextmanager
def claim(paths: Iterable[str]) -> Iterator[None]:
    """Hold an exclusive lock on each output of ``paths`` for the block (a lock file beside its target, see
    :func:`lock_path`): a second process that claims one of them meanwhile gets an :class:`OutputError`, so that
    two runs writing one file do not both report success. Claims of this process nest; ``-`` (stdout) and outputs
    whose folder does not exist yet are skipped (:func:`~fairseq_prune.io.checkpoints.atomic_outputs` claims them
    once it has made the folder). The lock files are removed on exit."""
    taken: List[str] = []
    try:
        for path in paths:
            if path == "-":
                continue
            lock = lock_path(output_target(path, "the output"))
            if lock not in taken and os.path.isdir(os.path.dirname(lock)):
                _acquire(lock, path)
                taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            _release(lock)


def commit(tmp: str, path: str, force: bool = True) -> str:
    """Put the finished temporary file ``tmp`` in place of output ``path``, checked again now: what became a FIFO,
    a device or a folder since the checks is refused, a symlink is written through (:func:`output_target`). With
    ``force`` an existing file is replaced atomically; without, ``tmp`` is hard-linked to a name that must still
    be free, so that a file another process put there meanwhile is kept and this run refuses. Returns the file
    written."""
    target = output_target(path, "the output")
    if force:
        os.replace(tmp, target)
        return target
    appeared = OutputError(f"{path}: appeared while this run was writing it (another run?) and is kept; pass --force "
                           "to replace it")
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise appeared from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):  # a file system without hard links: check, then rename
            raise appeared from None
        os.replace(tmp, target)
        return target
    os.remove(tmp)
    return target


def _os_cause(error: OSError) -> str:
    """Why a write failed, in words; the file-size limit's value for EFBIG."""
    cause = error.strerror or str(error)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if error.errno == errno.EFBIG and limit != resource.RLIM_INFINITY:
        cause += f": the file-size limit (ulimit -f) is {limit} bytes"
    return cause


def _torch_write_error(error: RuntimeError) -> bool:
    """Whether ``error`` is torch.save's C++ writer failing to write (a full disk, the file-size limit)."""
    text = str(error)
    return "inline_container.cc" in text or "PytorchStreamWriter" in text or "file write failed" in text


def _torch_cause(error: RuntimeError, tmp: Optional[str]) -> str:
    """Why torch.save could not write: an OSError it chained, else one byte more appended to the file it was
    writing (``tmp``) fails as torch's write did (ENOSPC, EDQUOT, EFBIG), else torch's first line."""
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return _os_cause(seen)
        seen = seen.__cause__ or seen.__context__
    if tmp is not None and os.path.isfile(tmp):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, b"\0")
            finally:
                os.close(fd)
        except OSError as e:
            return _os_cause(e)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"torch.save failed: {lines[0] if lines else type(error).__name__}"


@contextlib.contextmanager
def writing(path: str, tmp: Optional[str] = None) -> Iterator[None]:
    """An error while writing output ``path`` (to its temporary file ``tmp``, whose name the error would give)
    becomes one :class:`OutputError` line naming ``path`` and the cause: any ``OSError`` (a full disk, a quota, the
    file-size limit: ENOSPC, EDQUOT, EFBIG), and torch.save's RuntimeError for the same ("unexpected pos")."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        failure = write_error(path, e, tmp)
        if failure is None:
            raise
        raise failure from e


def write_error(path: str, error: BaseException, tmp: Optional[str] = None) -> Optional[OutputError]:
    """The one-line :class:`OutputError` of :func:`writing` for ``error`` while writing ``path`` (to ``tmp``), or
    ``None`` when ``error`` is not a failed write."""
    if isinstance(error, OSError):
        return OutputError(f"{path}: cannot write ({_os_cause(error)})")
    if isinstance(error, RuntimeError) and _torch_write_error(error):
        return OutputError(f"{path}: cannot write ({_torch_cause(error, tmp)})")
    return None


def ignore_file_size_signal() -> None:
    """Let writes past the file-size limit (``ulimit -f``) fail with EFBIG, which :func:`writing` reports, instead
    of the kernel's SIGXFSZ ending the process. Python ignores SIGXFSZ at start-up; this holds it where an
    embedding program did not (main thread only: signal dispositions are set there)."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
