"""The experiments' child processes (``fairseq-hydra-train``, export, decoding) each in a process group of its own,
so that a demo or study stopped by SIGTERM (``timeout``, a job scheduler, CI) or Ctrl-C stops them too instead of
leaving them running, orphaned, on both cores.

:func:`stopping_children` is the main program's guard: while it is active, SIGTERM raises :class:`Stopped`
in the main thread; on the way out every group still registered gets SIGTERM, then SIGKILL after a grace
period, and the program says what it stopped. :func:`popen` starts a registered child.

Python runs a signal handler in the main thread, and only once that thread is between bytecodes. The kernel may
deliver SIGTERM to any thread; if it lands on a worker while the main thread sleeps in an untimed wait (a future's
``result()``, ``concurrent.futures.wait``), the handler never runs and the program ignores the signal (seen with
``nohup``: the study went on). So the main thread waits on its runs in slices of :data:`POLL_SECONDS`
(:func:`in_threads`, :func:`first_done`)."""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Dict, Iterable, Iterator, List, Set, TypeVar

_children: Dict[int, List[str]] = {}  # pid (= process group id) -> command
_lock = threading.Lock()
#: seconds a stopped group has to exit after SIGTERM before it gets SIGKILL
GRACE_SECONDS = 10.0
#: the longest the main thread sleeps while it waits on runs (so that a signal handler runs within this)
POLL_SECONDS = 0.5
T = TypeVar("T")
R = TypeVar("R")


class Stopped(BaseException):
    """SIGTERM or SIGINT reached the main program, whose children were stopped already; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _prctl():
    """Linux's ``prctl`` from the C library, looked up once here (a child between fork and exec must not load
    anything); None elsewhere."""
    try:
        import ctypes
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (even by SIGKILL, as at the end of a
    session), so that a child in its own session is never left running alone."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child(subprocess.Popen):
    """A ``subprocess.Popen`` in a new session (its own process group) that gets SIGTERM when its parent dies,
    registered until it has been waited for."""

    def __init__(self, cmd: List[str], **kwargs) -> None:
        super().__init__(cmd, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)
        with _lock:
            _children[self.pid] = list(cmd)

    def wait(self, timeout=None):
        code = super().wait(timeout)
        with _lock:
            _children.pop(self.pid, None)
        return code


def popen(cmd: List[str], **kwargs) -> Child:
    """Start ``cmd`` in its own process group (``subprocess.Popen`` arguments); see :func:`stopping_children`."""
    return Child(cmd, **kwargs)


def run(cmd: List[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` (capturing as asked) for a registered child."""
    with popen(cmd, **kwargs) as p:
        out, err = p.communicate()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def stop_all(grace: float = GRACE_SECONDS) -> List[List[str]]:
    """SIGTERM every registered group, SIGKILL what is left after ``grace`` seconds; returns their commands."""
    with _lock:
        groups = dict(_children)
    for pid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = set(groups)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        if alive:
            time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return list(groups.values())


@contextlib.contextmanager
def stopping_children(program: str) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT (Ctrl-C) first stop every child group (in the handler, so that no
    thread is left waiting on a child's output), then raise :class:`Stopped`, which ends the program: one line
    per stopped command and a summary on stderr, exit code 143 / 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopped: List[List[str]] = []

    def handler(signum, frame):
        for s in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        stopped.extend(stop_all())
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Stopped as e:
        for cmd in stopped:
            shown = [os.path.basename(cmd[0]), *cmd[1:6]] + (["..."] if len(cmd) > 6 else [])
            print(f"{program}: stopped {' '.join(shown)}", file=sys.stderr)
        print(f"{program}: stopped by {signal.Signals(e.signum).name}; {len(stopped)} child process group(s) "
              "stopped, none left running (an interrupted run resumes from its checkpoint_last.pt)", file=sys.stderr)
        sys.exit(128 + e.signum)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def first_done(futures: Iterable[Future]) -> Set[Future]:
    """``concurrent.futures.wait(futures, FIRST_COMPLETED)``, waiting in slices (see the module's note)."""
    futures = list(futures)
    while True:
        done, _ = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        if done:
            return done


def in_threads(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> List[R]:
    """``list(pool.map(fn, items))``, waiting in slices (see the module's note); the first error is raised."""
    futures = [pool.submit(fn, item) for item in items]
    pending = set(futures)
    while pending:
        pending -= first_done(pending)
    return [f.result() for f in futures]

