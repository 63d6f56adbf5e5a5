"""Output folders written all or nothing (the corpus scripts' corpora and manifests): :class:`Staging` writes
under a locked temporary folder inside the destination and moves everything to its final name at once;
:func:`sweep_stale_partials` removes the temporary folders of killed runs; :func:`check_dest` refuses a destination
that is not empty. Single output files: :mod:`fairseq_prune.io.safe_output`."""
import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from typing import List, Set, Tuple

from .safe_output import OutputError
from .signals import COMPLETED, sigterm_deferred

#: temporary folders of :class:`Staging`: this prefix, 8 characters of ``tempfile``'s alphabet, and inside
#: :data:`STAGING_LOCK`, locked (``flock``) by the process writing there for as long as it runs
PARTIAL_RE = re.compile(r"^\.partial-[a-z0-9_]{8}$")
STAGING_LOCK = ".staging-lock"
#: lock file descriptors of this process's live :class:`Staging` folders
_HELD_LOCKS: Set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child (synthesis workers): close the copies of the staging locks, so that the lock ends with
    the process that took it even when workers outlive it (``kill -9`` of the parent leaves them orphaned)."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def check_dest(dest: str, overwrite: bool, replaces: str) -> None:
    """Refuse an output folder that exists and is not empty unless ``overwrite`` (``--overwrite``);
    ``replaces`` says what ``--overwrite`` replaces. Stale staging folders (:func:`sweep_stale_partials`) are
    removed first: they do not make a folder non-empty."""
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise OutputError(f"{dest}: exists and is not a folder")
    if os.path.isdir(dest):
        sweep_stale_partials(dest)
        if os.listdir(dest) and not overwrite:
            raise OutputError(f"{dest}: folder exists and is not empty (pass --overwrite to replace {replaces})")


def sweep_stale_partials(folder: str) -> List[str]:
    """Remove the :class:`Staging` folders in ``folder`` that a killed run left (``kill -9``, power loss): ours by
    name and lock file, stale because no process holds their lock. Anything else, and a staging folder in use, is
    left alone. Returns the names removed (each also reported on stdout)."""
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if PARTIAL_RE.match(name) and not os.path.islink(path) and _lock_is_free(os.path.join(path, STAGING_LOCK)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
            print(f"removed {path}: the partial output of an interrupted run", flush=True)
    return removed


def _lock_is_free(lock: str) -> bool:
    """Whether ``lock`` exists and no process holds its ``flock`` (the one who did was killed)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file (not ours, or a folder being created right now)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held by a running process (or flock unsupported here: keep it)
        return False
    finally:
        os.close(fd)


def _locked_partial_folder(dest: str) -> Tuple[str, int]:
    """A new ``.partial-*`` folder in ``dest`` and the descriptor of its locked lock file. The folder gets its
    ``.partial-XXXXXXXX`` name only once the lock is held, so a sweep never sees it unlocked."""
    new = tempfile.mkdtemp(prefix=".partial-", suffix=".new", dir=dest)
    lock = os.open(os.path.join(new, STAGING_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
    _HELD_LOCKS.add(lock)
    with contextlib.suppress(OSError):  # no flock here: the folder is then never taken for stale
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    tmp = new[: -len(".new")]
    os.rename(new, tmp)
    return tmp, lock


class Staging:
    """All-or-nothing output into ``dest``: files and folders are written under a temporary folder inside
    ``dest`` (``.partial-*``) and moved to their final names by :meth:`commit`. :meth:`abort` (called when the
    ``with`` block raises, SIGTERM included: see :func:`fairseq_prune.io.signals.run_or_exit`) removes everything
    written, and ``dest`` itself when this object created it. The temporary folder holds a lock for as long as
    this process lives, so that a later run can tell one left by a killed run and remove it
    (:func:`sweep_stale_partials`)."""

    def __init__(self, dest: str) -> None:
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise OutputError(f"{dest}: the destination exists and is not a folder")
        self.dest = os.path.abspath(dest)
        self._created = []
        parent = self.dest
        while not os.path.exists(parent):
            self._created.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(self.dest, exist_ok=True)
        sweep_stale_partials(self.dest)
        self.tmp, self._lock = _locked_partial_folder(self.dest)
        self._staged: List[Tuple[str, str]] = []

    def final_path(self, name: str) -> str:
        """Where ``name`` (relative to ``dest``) ends up after :meth:`commit`."""
        return os.path.join(self.dest, name)

    def file(self, name: str) -> str:
        """A temporary path to write the file that will become ``dest/name``."""
        staged = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        self._staged.append((staged, self.final_path(name)))
        return staged

    def folder(self, name: str) -> str:
        """A temporary folder that will become ``dest/name`` (replacing an existing one) on commit; asking again for
        the same name returns the same folder."""
        staged = os.path.join(self.tmp, name)
        if not os.path.isdir(staged):
            os.makedirs(staged)
            self._staged.append((staged, self.final_path(name)))
        return staged

    def commit(self) -> None:
        """Move every staged file and folder to its final name (SIGTERM waits until all are moved), then remove
        the temporary folder."""
        with sigterm_deferred():
            for staged, final in self._staged:
                if os.path.isdir(final) and not os.path.islink(final):
                    shutil.rmtree(final)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(staged, final)
            COMPLETED.append(self.dest)
        self._remove_tmp()

    def abort(self) -> None:
        """Remove everything written so far (and the folders this object created)."""
        self._remove_tmp()
        for folder in self._created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break

    def _remove_tmp(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._lock is not None:
            _HELD_LOCKS.discard(self._lock)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
