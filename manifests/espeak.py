"""Speech from espeak-ng: one utterance (:class:`Job`) becomes 16 kHz 16-bit FLAC (:func:`synthesize`: espeak-ng's
22,050 Hz WAV resampled with an exact polyphase filter and scaled to the speaker's peak level), many in worker
processes (:func:`run_jobs`). Used by :mod:`manifests.synthesize` and :mod:`manifests.unlabeled`."""
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass
from math import gcd
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from manifests.common import SAMPLE_RATE, ManifestError, progress

ESPEAK = "espeak-ng"


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise: text as spoken, speaker settings, output path."""

    text: str
    voice: str
    speed: int
    pitch: int
    peak: float
    path: str



def espeak_version() -> str:
    """``espeak-ng --version`` without its data path; raises a clear error when espeak-ng is missing."""
    if shutil.which(ESPEAK) is None:
        raise ManifestError(f"{ESPEAK} not found on PATH: install it (apt-get install espeak-ng; "
                            "scripts/setup_env.sh does this)")
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("Data at")[0].strip()


def parse_wav(data: bytes) -> Tuple[int, np.ndarray]:
    """Sample rate and int16 samples of the mono 16-bit PCM WAV espeak-ng writes to stdout (its size fields are
    placeholders there, so the data chunk runs to the end)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV file")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[pos + 8:pos + 16])
            bits = struct.unpack("<H", data[pos + 22:pos + 24])[0]
            if (fmt, channels, bits) != (1, 1, 16):
                raise ValueError(f"unexpected WAV format {fmt}, {channels} channels, {bits} bits")
        elif chunk == b"data":
            if rate is None:
                raise ValueError("WAV data before its format chunk")
            body = data[pos + 8:]
            return rate, np.frombuffer(body[:len(body) // 2 * 2], dtype="<i2")
        pos += 8 + size + (size & 1)
    raise ValueError("WAV file without data")


def synthesize(job: Job) -> int:
    """Run espeak-ng for one job, write 16 kHz 16-bit FLAC; returns the number of samples."""
    from scipy.signal import resample_poly

    cmd = [ESPEAK, "-v", job.voice, "-s", str(job.speed), "-p", str(job.pitch), "--stdout", job.text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    rate, pcm = parse_wav(proc.stdout)
    if pcm.size == 0 or not pcm.any():
        raise RuntimeError(f"{' '.join(cmd)} produced no sound")
    g = gcd(SAMPLE_RATE, rate)
    audio = resample_poly(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE // g, rate // g)
    audio *= job.peak / np.abs(audio).max()
    os.makedirs(os.path.dirname(job.path), exist_ok=True)
    sf.write(job.path, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return int(audio.shape[0])


def _synthesize_safely(job: Job) -> Tuple[str, int, Optional[str]]:
    try:
        return job.path, synthesize(job), None
    except Exception as e:  # reported by the parent with the file it was for
        return job.path, 0, f"{type(e).__name__}: {e}"


def _worker_signals() -> None:
    """Pool initializer: a worker dies by the kernel's default action of SIGTERM (``Pool.terminate()`` sends it), so
    no Python-level handler inherited from the parent can miss it while the worker waits on the task queue (a
    handler runs only once the blocked call returns, and a signal landing just before ``sem_wait`` never makes it
    return); Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_jobs(jobs: Sequence[Job], workers: int, shown: Callable[[str], str] = str) -> Dict[str, int]:
    """Synthesise every job (in ``workers`` processes); returns samples per path. ``shown`` maps a job's (temporary)
    path to the name an error message gives. A pool whose work is done is closed and joined; it is terminated only
    when the parent stops early (a failed job, SIGTERM, Ctrl-C)."""
    frames: Dict[str, int] = {}
    if workers == 1:
        for path, n, error in progress(map(_synthesize_safely, jobs), desc="synthesizing", unit="utt",
                                       total=len(jobs)):
            frames[path] = _checked(path, n, error, shown)
        return frames
    methods = multiprocessing.get_all_start_methods()
    pool = multiprocessing.get_context("fork" if "fork" in methods else None).Pool(workers, _worker_signals)
    try:
        results = pool.imap(_synthesize_safely, jobs, chunksize=4)
        for path, n, error in progress(results, desc="synthesizing", unit="utt", total=len(jobs)):
            frames[path] = _checked(path, n, error, shown)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
    return frames


def _checked(path: str, n: int, error: Optional[str], shown: Callable[[str], str]) -> int:
    if error is not None:
        raise ManifestError(f"{shown(path)}: synthesis failed ({error})")
    return n
