"""The documents read back from the cluster: every field checked; any input gives a record or hpcjup's own error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hpcjup.errors import DamagedDocument, HpcjupError
from hpcjup.session.record import Connection, JobReport, SessionRecord

GOOD_CONNECTION: dict[str, Any] = {
    "job_id": "42",
    "node": "node1",
    "address": "10.0.0.7",
    "port": 8888,
    "token": "ab" * 32,
    "base_url": "/",
}
GOOD_RECORD: dict[str, Any] = {
    "name": "lab",
    "host": "alice@juwels:2222",
    "scheduler": "slurm",
    "job_id": "42",
    "created_at": "2026-12-01T10:00:00+00:00",
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with some fields replaced by arbitrary JSON, dropped, or added."""
    return st.dictionaries(st.sampled_from([*base, "extra"]), JSON | st.just(None), max_size=len(base) + 1).map(
        lambda changes: {k: v for k, v in {**base, **changes}.items() if v is not None or k == "extra"}
    )


@settings(max_examples=400, deadline=None)  # no deadline: these machines are shared
@given(st.binary(max_size=200) | mutated(GOOD_RECORD).map(lambda d: json.dumps(d).encode()))
@example(json.dumps({**GOOD_RECORD, "job_id": 12}).encode())  # the case: a number
@example(b'{"name": "lab", "host": "minic')  # truncated
def test_session_json_never_raises_anything_else(raw: bytes) -> None:
    try:
        record = SessionRecord.from_json(raw)
    except HpcjupError:
        return
    assert isinstance(record.job_id, str) and record.job_id and "\n" not in record.name + record.job_id


@settings(max_examples=400, deadline=None)  # no deadline: these machines are shared
@given(
    st.binary(max_size=200)
    | mutated({"state": "running", "reason": "idle", "exit_code": 0}).map(lambda d: json.dumps(d).encode())
)
def test_state_json_never_raises_anything_else(raw: bytes) -> None:
    try:
        report = JobReport.from_json(raw)
    except HpcjupError:
        return
    assert report.state in ("starting", "running", "stopping", "ended")


@settings(max_examples=400, deadline=None)  # no deadline: these machines are shared
@given(mutated(GOOD_CONNECTION))
def test_connection_json_never_raises_anything_else(data: dict[str, Any]) -> None:
    try:
        conn = Connection.from_dict(data)
    except HpcjupError:
        return
    assert conn.base_url.startswith("/") and not conn.base_url.startswith("//")
    assert isinstance(conn.port, int) and 0 <= conn.port <= 65535 and not isinstance(conn.port, bool)
    assert conn.node[0].isalnum() and " " not in conn.node


@pytest.mark.parametrize(
    "field,value",
    [
        ("base_url", "@otherhost/"),  # http://127.0.0.1:P@otherhost/ would send the token to otherhost
        ("base_url", "//evil/"),
        ("base_url", "/a b"),
        ("node", "node1 -oProxyCommand=x"),
        ("node", "-node"),
        ("port", True),
        ("port", "8888"),
        ("port", 70000),
        ("token", "short"),
        ("token", "ab" * 32 + "\n"),
        ("address", "1.2.3.4; rm -rf"),
    ],
)
def test_hostile_connection_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises(DamagedDocument) as info:
        Connection.from_dict({**GOOD_CONNECTION, field: value})
    assert field in info.value.message


def test_good_documents_parse() -> None:
    assert Connection.from_dict(GOOD_CONNECTION).token == "ab" * 32
    assert SessionRecord.from_json(json.dumps(GOOD_RECORD).encode()).host == "alice@juwels:2222"


def test_a_session_uses_the_envs_it_names_and_no_sibling_of_theirs() -> None:
    """`env rm` and `prune --envs` ask this one question (session.envuse.users): the kernels' envs, the Python the job
    runs, the container command; a neighbouring directory whose name starts the same is not used."""
    root = "/home/u/.hpcjup/envs"
    record = SessionRecord(
        "lab",
        "h",
        "slurm",
        "7",
        "2026-12-01T00:00:00+00:00",
        python=f"{root}/server-1/bin/python",
        envs=[f"{root}/env-a"],
    )
    assert record.uses_env(f"{root}/env-a") and record.uses_env(f"{root}/env-a/")
    assert record.uses_env(f"{root}/server-1")
    assert not record.uses_env(f"{root}/env-ab") and not record.uses_env(f"{root}/env-b")
    assert SessionRecord.from_json(record.to_json()).uses_env(f"{root}/env-a")
