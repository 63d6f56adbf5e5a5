"""Errors and signals of the corpus scripts: :class:`ManifestError` (bad input, one line), :class:`Terminated`
(SIGTERM), and :func:`run_or_exit`, the body runner of every script. A leaf module: the others import it.

The corpus scripts keep their own error root rather than the plugin's (``fairseq_prune.io.errors.PluginError``):
importing the plugin imports fairseq and torch, seconds of start-up for scripts that need neither."""
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, List, Optional

#: the destinations that :meth:`manifests.staging.Staging.commit` has moved into place in this process: a signal
#: after that stops nothing (see :func:`run_or_exit`)
COMPLETED: List[str] = []


class ManifestError(Exception):
    """Bad input that stops a script: the message names the file (and line or field) and what is wrong."""


class Terminated(BaseException):
    """SIGTERM arrived: raised where the script is (a ``BaseException``, so that no ``except Exception`` takes it
    for bad input), so that :class:`Staging` removes what it wrote."""


def run_or_exit(body: Callable[[], None], prog: Optional[str] = None) -> None:
    """Run a script's body; a :class:`ManifestError` becomes one ``PROG: error: ...`` line on stderr and exit code 1
    (``prog``: the script's file name, default ``sys.argv[0]``'s, so that a line in a long log says who wrote it).
    SIGTERM and Ctrl-C stop it the same way (exit codes 143 and 130) after the partial output is removed; one that
    comes once the output is complete (Staging committed) stops nothing: exit 0, so that 0 means "complete" and
    143/130 "nothing written"."""
    prog = prog or os.path.basename(sys.argv[0]) or "manifests"
    try:
        with _terminate_by_exception():
            body()
    except ManifestError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except (Terminated, KeyboardInterrupt) as e:
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        done = list(COMPLETED)
        if done:  # the signal came after the output was moved into place (the only staging of a script)
            print(f"note: {signum.name} came after the output was complete: {', '.join(done)}", file=sys.stderr)
            sys.exit(0)
        print(f"{prog}: error: stopped by {signum.name}; output not yet complete was removed", file=sys.stderr)
        sys.exit(128 + signum)


@contextlib.contextmanager
def _terminate_by_exception():
    """While the block runs, SIGTERM raises :class:`Terminated` in this process. Processes forked meanwhile inherit
    the handler, which there re-sends the signal with its default action; a handler only runs once a blocked call
    returns, so pool workers must not rely on it: :func:`manifests.espeak.run_jobs` gives its workers the default
    action from the start."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    done = False
    try:
        yield
        done = True
    finally:
        # a script whose output is complete only has to exit: the default action restored now would kill it
        # between here and its exit (status -15 with a complete corpus); the signal stops nothing any more
        finished = done and COMPLETED and previous == signal.SIG_DFL and _running_as_script()
        signal.signal(signal.SIGTERM, signal.SIG_IGN if finished else previous)


def _running_as_script() -> bool:
    """Whether this process is one of the corpus scripts run as a program (not a caller that imported them)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.dirname(os.path.abspath(main_file)) == os.path.dirname(os.path.abspath(__file__))
