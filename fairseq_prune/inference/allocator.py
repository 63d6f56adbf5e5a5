"""Keep the memory of large activations between calls (glibc), for CPU inference and timing.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at first, raised up to 32 MiB as such blocks are
freed) with a fresh ``mmap`` and returns it to the kernel when it is freed. A model called over and over on 10 s
of audio then faults in every page of its large activations again on each call, and the kernel zeroes each one:
the mini model's feature extractor writes about 62 MiB that way per call (128 channels x 32,000 frames x 4 bytes
per conv output, and the norm's and GELU's), which makes conv layer 0 (one input channel, 0.7% of the CNN's
MACs) cost as much as a layer of 128 input channels, and the times of the first conv layers swing from call to
call with the machine's load (docs/latency.md, "Where the time goes").

:func:`reuse_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold with it, so that those
blocks come from the heap and stay there once freed: the next call reuses them without a page fault. The price is
that the process keeps its peak memory instead of returning it to the system, which suits a decoder or a timing
loop; training (``fairseq-hydra-train``) is left as it is. The commands that decode or time models call it
(``fairseq-prune-infer``, fairseq's ``infer.py`` launcher, ``fairseq-prune-profile``, ``fairseq-prune-latency``,
``fairseq-prune-export --measure-latency``, the benchmarks). ``FAIRSEQ_PRUNE_MALLOC=default`` keeps glibc's
behaviour, as does a threshold the user set (``MALLOC_MMAP_THRESHOLD_``, or ``GLIBC_TUNABLES`` naming one).
Elsewhere than glibc nothing changes.
"""
import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

#: mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap (glibc accepts up to its maximum heap size on 64-bit systems)
THRESHOLD = 1 << 30
#: the environment variable that keeps glibc's defaults
OPT_OUT = "FAIRSEQ_PRUNE_MALLOC"

_applied = None


def user_setting() -> str:
    """Why the allocator is left alone ('' when it may be changed): the opt-out or the user's own threshold."""
    if os.environ.get(OPT_OUT, "").lower() == "default":
        return f"{OPT_OUT}=default"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return "MALLOC_MMAP_THRESHOLD_ is set"
    if "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc.mmap_threshold"
    return ""


def reuse_freed_memory() -> bool:
    """Let this process keep and reuse the memory of its large blocks (see the module's docstring); returns
    whether the setting is in force. Called more than once it does nothing more."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    reason = user_setting()
    if reason:
        logger.debug("allocator left as it is: %s", reason)
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the trim threshold first: without it, freed heap memory would go back to the kernel and fault in again
    _applied = bool(mallopt(M_TRIM_THRESHOLD, 2 * THRESHOLD - 1)) and bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    if not _applied:
        logger.debug("allocator: glibc refused mallopt; left as it is")
    return _applied
