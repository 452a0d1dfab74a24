"""session.json's `python` and connection.json's `dask.scheduler` come from the cluster (anyone with the account
can edit them): whatever they hold, they reach no command line or URL unless they have their one shape."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hpcjup.config.schema import KEYS, coerce
from hpcjup.errors import DamagedDocument, UsageError
from hpcjup.session.record import Connection, SessionRecord
from tests.session.test_records import GOOD_CONNECTION, GOOD_RECORD

SHELL = set(" \t\n;&|$`()<>\\\"'*?[]{}!#")


def with_python(value: Any) -> bytes:
    return json.dumps({**GOOD_RECORD, "python": value}).encode()


def with_scheduler(value: Any) -> dict[str, Any]:
    return {**GOOD_CONNECTION, "dask": {"scheduler": value, "dashboard_port": 8787, "workers": 2}}


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60) | st.sampled_from(["python3", "~/env/bin/python", "/opt/py/bin/python3.11"]))
@example("python3; rm -rf ~")
@example("python3 -c 'import os'")
@example("-i")
@example("$(reboot)")
@example("~user/python")
def test_python_is_one_plain_word_or_the_record_is_damaged(value: str) -> None:
    try:
        record = SessionRecord.from_json(with_python(value))
    except DamagedDocument as exc:
        assert "python" in exc.message
        return
    assert not SHELL & set(record.python) and not record.python.startswith("-")
    assert shlex.split(record.python) == [record.python]  # a shell reads it as the one word it is
    assert "~" not in record.python[1:]


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=60)
    | st.builds(lambda host, port: f"tls://{host}:{port}", st.text(max_size=20), st.integers(-5, 70000))
    | st.integers()
    | st.none()
)
@example("tls://node1:8786 --preload evil")
@example("tls://node1:8786/../x")
@example("tls://node1:8786\n")
@example("tls://@evil:1")
@example("tls://node1:99999")
@example("tls://[::1]:8786; x")
def test_dask_scheduler_is_an_address_or_the_connection_is_damaged(value: Any) -> None:
    try:
        conn = Connection.from_dict(with_scheduler(value))
    except DamagedDocument as exc:
        assert "scheduler" in exc.message
        return
    address = (conn.dask or {})["scheduler"]
    if address is None:
        return
    match = re.fullmatch(r"(tls|tcp)://(\[[0-9A-Fa-f:.%A-Za-z_-]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]+)", address)
    assert match is not None, address
    assert 0 < int(match.group(3)) <= 65535


@pytest.mark.parametrize("value", ["tls://10.0.0.7:8786", "tls://node1.cluster:40001", "tls://[fe80::1%eth0]:8786"])
def test_the_launchers_addresses_are_read(value: str) -> None:
    assert (Connection.from_dict(with_scheduler(value)).dask or {})["scheduler"] == value


@pytest.mark.parametrize("value", ["python3", "~/env/bin/python", "/p/software/Python/3.11/bin/python3.11"])
def test_pythons_a_user_names_are_read(value: str) -> None:
    assert SessionRecord.from_json(with_python(value)).python == value
    assert coerce(KEYS["python"], value, "--python") == value


@pytest.mark.parametrize("value", ["python3; touch /tmp/x", "/opt/my env/python", "-i", "$HOME/py"])
def test_the_python_setting_has_the_shape_session_json_is_read_with(value: str) -> None:
    """start refuses what would make its own session.json read as damaged later."""
    with pytest.raises(UsageError, match="without spaces or shell characters"):
        coerce(KEYS["python"], value, "--python")
    with pytest.raises(DamagedDocument):
        SessionRecord.from_json(with_python(value))
