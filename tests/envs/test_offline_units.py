"""The offline path's platform tags (from the probe's `uname -m` and libc), without a cluster."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs import offline
from hpcjup.envs.errors import EnvBuildError


def test_platform_tags() -> None:
    assert offline.platforms("x86_64", "glibc2.36")[0] == "x86_64-manylinux_2_36"
    assert offline.platforms("x86_64", "glibc2.41")[0] == "x86_64-manylinux_2_40"
    assert offline.platforms("aarch64", "glibc2.30")[0] == "aarch64-manylinux_2_28"
    uv_tag, pip_tags = offline.platforms("x86_64", "glibc2.28")
    assert uv_tag == "x86_64-manylinux_2_28"
    assert pip_tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in pip_tags
    assert "manylinux2014_x86_64" in pip_tags and "manylinux_2_16_x86_64" not in pip_tags
    assert offline.platforms("x86_64", "musl1.2") == (
        "x86_64-unknown-linux-musl",
        ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64", "musllinux_1_0_x86_64"],
    )
    for machine, libc in (("ppc64le", "glibc2.36"), ("x86_64", "glibc2.12"), ("x86_64", "unknown")):
        with pytest.raises(EnvBuildError):
            offline.platforms(machine, libc)


@given(machine=st.sampled_from(["x86_64", "aarch64"]), minor=st.integers(17, 60))
def test_glibc_tags_never_claim_a_newer_glibc_than_the_hosts(machine: str, minor: int) -> None:
    uv_tag, pip_tags = offline.platforms(machine, f"glibc2.{minor}")
    uv_minor = int(uv_tag.rsplit("_", 1)[1])
    assert uv_tag.startswith(f"{machine}-manylinux_2_") and uv_minor in offline.UV_MANYLINUX and uv_minor <= minor
    manylinux = [int(tag.split("_")[2]) for tag in pip_tags if tag.startswith("manylinux_2_")]
    assert manylinux[0] == minor and all(m <= minor for m in manylinux) and all(t.endswith(machine) for t in pip_tags)


@given(machine=st.text(max_size=12), libc=st.text(max_size=16))
def test_any_probe_answer_gives_tags_or_a_clear_error(machine: str, libc: str) -> None:
    try:
        uv_tag, pip_tags = offline.platforms(machine, libc)
    except EnvBuildError as exc:
        assert exc.exit_code == 11 and exc.hint
    else:
        assert uv_tag.startswith(machine) and pip_tags
