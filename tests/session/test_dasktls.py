"""The session's Dask certificate: valid for as long as the session may run, no longer (issue 23)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from hpcjup.session.dasktls import NO_LIMIT, QUEUE_MARGIN, make_credentials


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (30 * 60, datetime.timedelta(minutes=30) + QUEUE_MARGIN),
        (2 * 86400, datetime.timedelta(days=2) + QUEUE_MARGIN),
        (None, NO_LIMIT),
    ],
)
def test_the_certificate_ends_with_the_sessions_time_limit(limit: int | None, expected: datetime.timedelta) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    cert = x509.load_pem_x509_certificate(make_credentials("lab", limit)[0])
    after = datetime.datetime.now(datetime.timezone.utc)
    ends = cert.not_valid_after_utc
    assert before + expected - datetime.timedelta(seconds=1) <= ends <= after + expected
    assert ends - before < datetime.timedelta(days=8), "never the old 30 days"
