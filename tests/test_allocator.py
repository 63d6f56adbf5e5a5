"""fairseq_prune.inference.allocator: with the setting in force a large block freed and asked for again comes back
without page faults (glibc's default faults it in afresh on every call); FAIRSEQ_PRUNE_MALLOC=default and the
user's own glibc threshold leave the allocator alone."""
import json
import subprocess
import sys

import pytest

from fairseq_prune.inference import allocator
from helpers import REPO

PROBE = """
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])  # the module alone: no torch, no fairseq
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
applied = allocator.reuse_freed_memory()
again = allocator.reuse_freed_memory()
call = lambda: bytearray(64 << 20)  # a 64 MiB block, zero-filled, freed after each call
call()
call()  # the heap has grown to its steady size
windows = []
for _ in range(3):  # the fewest faults of three windows of four calls: the steady state, whatever else runs
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        call()
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 4)
print(json.dumps({"applied": applied, "again": again, "faults": min(windows)}))
"""


def probe(env_extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, allocator.__file__], env={**env, **env_extra}, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_are_reused_without_page_faults_unless_opted_out():
    kept = probe({})
    assert kept["applied"] and kept["again"]
    assert kept["faults"] < 100  # 64 MiB are 16,384 pages: none faulted in again
    default = probe({"FAIRSEQ_PRUNE_MALLOC": "default"})
    assert not default["applied"]
    assert default["faults"] > 10000  # glibc maps the block afresh each time


def test_the_users_own_threshold_is_left_alone(monkeypatch):
    for name in ("FAIRSEQ_PRUNE_MALLOC", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert allocator.user_setting() == ""
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    assert allocator.user_setting() == ""  # another tunable
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")
    assert allocator.user_setting() == "GLIBC_TUNABLES sets glibc.malloc.mmap_threshold"
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    assert allocator.user_setting() == "MALLOC_MMAP_THRESHOLD_ is set"
    monkeypatch.setenv("FAIRSEQ_PRUNE_MALLOC", "default")
    assert allocator.user_setting() == "FAIRSEQ_PRUNE_MALLOC=default"
