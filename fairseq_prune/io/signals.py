"""SIGTERM and Ctrl-C as exceptions, so that what removes unfinished output runs, and the one runner of a command's
body that turns a refusal into one ``PROG: error: ...`` line.

* :class:`Terminated`: raised by :func:`sigterm_raises` in place of dying of SIGTERM (a ``SystemExit``, code
  128 + the signal number, so that no ``except Exception`` takes it for bad input);
* :data:`COMPLETED`: the outputs this process has moved into place (:class:`fairseq_prune.io.staging.Staging`): a
  signal after that stops nothing;
* :func:`sigterm_deferred`: SIGTERM held back while a block runs (the renames that complete an output);
* :func:`run_or_exit`: a command's body run under :func:`sigterm_raises`, its :class:`PluginError` printed as one
  line. Used by the corpus scripts (``manifests/``) and by :func:`fairseq_prune.cli.profile.run_command`.
"""
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator, List, Optional

from .errors import PluginError, one_line

#: the destinations that :meth:`fairseq_prune.io.staging.Staging.commit` has moved into place in this process
COMPLETED: List[str] = []


class Terminated(SystemExit):
    """Raised by :func:`sigterm_raises` in place of dying of SIGTERM; its code is 128 + the signal number."""


@contextlib.contextmanager
def sigterm_raises(ignore_after: Optional[Callable[[], bool]] = None) -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in this process (cleanup code runs) instead of ending
    it at once. Processes forked meanwhile (data-loading or synthesis workers) inherit the handler, which there
    re-sends the signal with its default action: they still die of it. A handler only runs once a blocked call
    returns, so pool workers must not rely on it (``manifests.espeak.run_jobs`` gives its workers the default action
    from the start). ``ignore_after``: asked when the block ends normally; true leaves SIGTERM ignored instead of
    restoring the previous action (a program whose output is complete and that only has to exit: the default
    action restored there would kill it with the output in place, status -15)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
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
    done = False
    try:
        yield
        done = True
    finally:
        keep_ignored = done and ignore_after is not None and previous == signal.SIG_DFL and ignore_after()
        signal.signal(signal.SIGTERM, signal.SIG_IGN if keep_ignored else previous)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """SIGTERM is held back (delivered when the block ends) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _running_as(script: str) -> bool:
    """Whether this process runs the program file ``script`` (not a caller that imported its module)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return bool(main_file) and os.path.realpath(main_file) == os.path.realpath(script)


def run_or_exit(body: Callable[[], None], prog: Optional[str] = None, status: int = 1,
                script: Optional[str] = None) -> None:
    """Run a command's body; a :class:`PluginError` becomes one ``PROG: error: ...`` line on stderr and exit code
    ``status`` (``prog``: the program's name, default ``script``'s file name, else ``sys.argv[0]``'s, so that a line
    in a long log says who wrote it). SIGTERM and Ctrl-C stop it the same way (exit codes 143 and 130) after the
    unfinished output is removed; one that comes once the output is complete (:data:`COMPLETED`) stops nothing: exit
    0, so that 0 means "complete" and 143/130 "nothing written". ``script``: the caller's own file (``__file__``);
    when the process runs that very file as its program, a body that completed its output leaves SIGTERM ignored
    until the process exits (see :func:`sigterm_raises`); any other caller gets its SIGTERM action back."""
    prog = prog or os.path.basename(script or sys.argv[0]) or "fairseq-prune"
    try:
        with sigterm_raises(ignore_after=lambda: bool(COMPLETED) and script is not None and _running_as(script)):
            body()
    except PluginError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(status)
    except (Terminated, KeyboardInterrupt) as e:
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        done = list(COMPLETED)
        if done:  # the signal came after the output was moved into place
            print(f"note: {signum.name} came after the output was complete: {', '.join(done)}", file=sys.stderr)
            sys.exit(0)
        print(f"{prog}: error: stopped by {signum.name}; output not yet complete was removed", file=sys.stderr)
        sys.exit(128 + signum)
