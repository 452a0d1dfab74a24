"""The laptop's side of environment images, without a cluster: what doctor makes of the host's line, what `env ls`
makes of an env's metadata, and the job's command that runs through job/envlocal.sh."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup.envs.pack import DOCTOR, DOCTOR_MARK, Image, doctor_words, image_of

WORDS = st.sampled_from(["yes", "no-squashfuse", "no-/dev/fuse", "mount-refused", "untried", "?", "", "x y"])
MODES = st.sampled_from(["auto", "image", "unpack", "direct"])


@given(st.text(max_size=80), MODES)
def test_any_doctor_line_is_a_check(line: str, mode: str) -> None:
    status, found, _ = doctor_words(line, mode)
    assert status in ("pass", "warn", "skip") and found


def test_doctor_on_a_host_with_everything() -> None:
    assert doctor_words("yes yes yes yes", "auto")[0] == "pass"
    status, found, _ = doctor_words("yes yes yes yes 1048576:/dev/shm", "auto")
    assert status == "pass" and found.startswith("unpack in RAM:") and "larger ones mounted" in found, found
    assert doctor_words("no-/dev/fuse yes yes yes", "auto")[1].startswith("unpack: images are unpacked")
    status, found, fix = doctor_words("yes yes yes no-mksquashfs", "auto")
    assert status == "warn" and "no mksquashfs" in found and "squashfs-tools" in fix


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["image", "name", "sha256"]), JSON, max_size=3), st.booleans())
def test_any_metadata_gives_an_image_or_none(meta: dict[str, Any], bad: bool) -> None:
    found = image_of(meta, bad)
    assert found is None or (isinstance(found, Image) and found.bad == bad)


def test_an_image_from_its_metadata() -> None:
    meta = {"image": {"sha256": "ab" * 32, "bytes": 123, "codec": "zstd", "tree_kb": 9}}
    assert image_of(meta) == Image("ab" * 32, 123, "zstd")
    assert image_of({"tool": "pip"}) is None


RAMS = st.sampled_from(["no-tmpfs", "0:/dev/shm", "1048576:/dev/shm", "?", "x:y", "12:"])


FIELD = st.sampled_from(["yes", "no-squashfuse", "no-/dev/fuse", "mount-refused", "?"])


@given(st.tuples(FIELD, FIELD, FIELD, FIELD), RAMS, MODES)
def test_doctor_says_what_auto_chooses_first(fields: tuple[str, ...], ram: str, mode: str) -> None:
    """The summary starts with the job's first choice, as envlocal.sh's `decide` makes it: RAM where unsquashfs
    is there and tmpfs has room within the bound, then a mount, then an unpack on disk."""
    words = list(fields)
    status, found, _ = doctor_words(" ".join([*words, ram]), mode)
    kb = ram.partition(":")[0]
    if mode == "direct":
        assert status == "skip"
    elif words[2] == "yes" and mode != "image" and kb.isdigit() and int(kb) > 0:
        assert found.startswith("unpack in RAM:") and f"up to {int(kb) // 1024} MiB" in found
        assert ("larger ones mounted" in found) == (words[0] == "yes" and mode == "auto"), found
    elif words[0] == "yes" and mode != "unpack":
        assert found.startswith("image:")
    elif words[2] == "yes" and mode != "image":
        assert found.startswith("unpack:")
    else:
        assert found.startswith("direct:") and status == "warn"


def probe(**environ: str) -> list[str]:
    """The doctor's probe (pack.DOCTOR) run here for real: its line's fields."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCJUP_JOB_"))} | environ
    out = subprocess.run(["sh", "-c", DOCTOR], env=env, capture_output=True, text=True, timeout=60).stdout
    line = next(line for line in out.splitlines() if line.startswith(DOCTOR_MARK))
    return line[len(DOCTOR_MARK) :].split()


def mem_available_kb() -> int:
    return int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemAvailable:")))


def slurm_memory_kb(**environ: str) -> str:
    """The job's memory as the Slurm adapter's job script exports it (HPCJUP_JOB_MEMORY_KB), evaluated by sh."""
    from hpcjup.config.resources import Resources
    from hpcjup.job.contract import ENV_MEMORY_KB
    from hpcjup.schedulers.base import JobSpec
    from hpcjup.schedulers.slurm import Slurm

    value = Slurm().environment(JobSpec("n", "/s", ["true"], Resources()))[ENV_MEMORY_KB]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | environ
    return subprocess.run(["sh", "-c", f"echo {value}"], env=env, capture_output=True, text=True).stdout.strip()


def test_the_probe_says_how_much_ram_auto_may_fill_here() -> None:
    """A quarter of the job's memory (the adapter's export, from Slurm's --mem or --mem-per-cpu), of MemAvailable
    without it, on /dev/shm (tmpfs here)."""
    assert slurm_memory_kb(SLURM_MEM_PER_NODE="8") == "8192"
    assert slurm_memory_kb(SLURM_MEM_PER_CPU="10", SLURM_CPUS_ON_NODE="4") == "40960"
    assert slurm_memory_kb() == "", "no memory said: no bound of the job's own (MemAvailable and cgroups remain)"
    fields = probe(HPCJUP_JOB_MEMORY_KB=slurm_memory_kb(SLURM_MEM_PER_NODE="8"))
    assert len(fields) == 5 and fields[4] == "2048:/dev/shm", fields
    assert probe(HPCJUP_JOB_MEMORY_KB="40960")[4] == "10240:/dev/shm"
    kb, where = probe()[4].split(":")
    assert where == "/dev/shm" and 0 < int(kb) <= mem_available_kb() // 4 * 1.1


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="0123456789 -x.", max_size=6))
def test_any_job_memory_value_gives_a_bound(value: str) -> None:
    """envlocal.sh's ram_kb on whatever the job's memory variable holds: a number of KB, never more than a quarter
    of it."""
    kb, _ = probe(HPCJUP_JOB_MEMORY_KB=value)[4].split(":")
    assert kb.isdigit() and int(kb) <= mem_available_kb() // 4 * 1.1
    if value.isdigit():
        assert int(kb) <= int(value) // 4
