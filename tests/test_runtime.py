"""advlab.runtime.reuse_freed_memory: large tensors reuse freed memory instead of new pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A fresh interpreter per case: the allocator setting lasts for the process, so the suite's own
# process must not decide the answer. Minor page faults count the fresh pages a process touches.
PROBE = """
import json, resource, sys
import torch
from advlab.runtime import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
def faults_of_one_tensor(mib):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(mib * 2**20 // 4)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
# activations of a few sizes above glibc's largest mmap threshold (32 MiB), as in an attack's steps
sizes = (36, 48, 64, 96)
for mib in sizes:  # the first of each is new memory either way
    faults_of_one_tensor(mib)
faults = sum(faults_of_one_tensor(mib) for _ in range(5) for mib in sizes)
print(json.dumps({"applied": applied, "faults": faults}))
"""

PAGES_TOUCHED = 5 * (36 + 48 + 64 + 96) * 2**20 // 4096


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator settings")
def test_repeated_large_tensors_reuse_freed_memory_instead_of_new_pages():
    without = _probe("off")
    with_reuse = _probe("on")
    assert with_reuse["applied"] is True
    # glibc's default: each freed block went back to the OS and every page faults in again
    assert without["faults"] > 0.9 * PAGES_TOUCHED
    # with reuse most blocks come back from the heap, their pages still mapped (measured: 13-21%
    # of the pages fault, glibc placing some blocks anew)
    assert with_reuse["faults"] < 0.5 * PAGES_TOUCHED


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator settings")
def test_an_allocator_setting_of_the_user_is_left_alone():
    assert _probe("on", MALLOC_MMAP_THRESHOLD_="1048576")["applied"] is False
