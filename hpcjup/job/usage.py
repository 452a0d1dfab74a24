"""What a session used, for `hpcjup stats`: usage.json beside state.json (standard library only).

Shipped beside launcher.py. usage.json (0600, written whole by atomic.write_private, under 1 KiB):
{schema, job_id, partition, nodes, time_limit (seconds granted, 0: unknown), submitted_at, started_at,
ready_at, ended_at, end_reason, busy_seconds, sample_seconds, updated_at}; times ISO 8601 UTC or null.
- submitted_at: when the session's files arrived on the cluster (the ctime of launcher.py, moved in just
  before the job was submitted): on the cluster's clock, like started_at, so a laptop's clock skew cannot
  make a queue wait negative.
- started_at: when the job's script started on this node (the launcher's own process start: the script
  exec's it, keeping its pid and start time); the launcher's start where /proc is missing.
- busy_seconds: time during which some kernel was busy, estimated from the samples the launcher takes
  anyway (its idle check, every sample_seconds): see busy_between.
- end_reason: state.json's reason at the end. A job killed outright never writes it: then updated_at,
  rewritten at least every HEARTBEAT seconds while the session runs, says until when it was alive.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any

from atomic import iso, write_private
from contract import ENV_NODELIST, ENV_PARTITION, ENV_TIME_LIMIT, SCHEMA, USAGE_FILE
from endings import env_seconds

HEARTBEAT = 300.0  # seconds: the longest a running session's usage.json goes unwritten
MIN_WRITE = 60.0  # seconds: busy time that changed is written at most this often


def process_start(pid: str = "self") -> float | None:
    """When process `pid` started (Unix time), from /proc; None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])  # 10 ms resolution (/proc/stat's btime is whole seconds)
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def arrived(path: str) -> float | None:
    """When `path` was put in place (its ctime: the last rename or mode change), or None."""
    try:
        return os.stat(path).st_ctime
    except OSError:
        return None


def parse_time(text: Any) -> float | None:
    """Unix time of an ISO 8601 string from Jupyter ('Z' or an offset; naive means UTC), or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def busy_between(kernels: Any, since: float, until: float, was_busy: bool) -> tuple[float, bool]:
    """Seconds of (since, until] during which some kernel was busy, and whether one is busy at `until`.

    Only the two samples and each kernel's last activity are known, so the unknown moment is taken
    half-way: busy at both ends counts whole; busy before and idle now counts up to the last activity
    (the moment the work ended); idle before and busy now counts half; idle at both ends with activity
    in between (a short cell) counts half of the time up to that activity.
    """
    models = [k for k in kernels if isinstance(k, dict)] if isinstance(kernels, list) else []
    busy_now = any(k.get("execution_state") == "busy" for k in models)
    span = max(0.0, until - since)
    if busy_now:
        return (span if was_busy else span / 2), True
    moments = [parse_time(k.get("last_activity")) for k in models]
    latest = max([m for m in moments if m is not None and since < m <= until], default=None)
    if was_busy:
        return (span if latest is None else latest - since), False
    return (0.0 if latest is None else (latest - since) / 2), False


class Usage:
    """usage.json of one session: filled in as the launcher goes, written when something changed."""

    def __init__(self, session_dir: str, job_id: str, launcher_file: str) -> None:
        self.path = os.path.join(session_dir, USAGE_FILE)
        nodes = len(set(os.environ.get(ENV_NODELIST, "").split()))
        started = process_start() or time.time()
        submitted = arrived(launcher_file)
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "job_id": job_id,
            "partition": os.environ.get(ENV_PARTITION, "")[:128] or None,
            "nodes": max(1, nodes),
            "time_limit": env_seconds(ENV_TIME_LIMIT),
            "submitted_at": None if submitted is None else iso(submitted),
            "started_at": iso(started),
            "ready_at": None,
            "ended_at": None,
            "end_reason": None,
            "busy_seconds": 0.0,
            "sample_seconds": 0,
            "updated_at": None,
        }
        self.busy = 0.0
        self.was_busy = False
        self.last_sample: float | None = None
        self.written = 0.0  # monotonic time of the last write

    def ready(self, sample_seconds: int) -> None:
        """Jupyter answers: the URL can be shown from now on; samples come every `sample_seconds`."""
        self.doc["ready_at"] = iso(time.time())
        self.doc["sample_seconds"] = sample_seconds
        self.last_sample = time.time()
        self.write()

    def sample(self, kernels: Any) -> None:
        """Account the time since the previous sample, given GET api/kernels now (None: no answer)."""
        moment = time.time()
        if self.last_sample is not None and kernels is not None:
            seconds, self.was_busy = busy_between(kernels, self.last_sample, moment, self.was_busy)
            self.busy += seconds
        self.last_sample = moment
        changed = round(self.busy, 1) != self.doc["busy_seconds"]
        since = time.monotonic() - self.written
        if (changed and since >= MIN_WRITE) or since >= HEARTBEAT:
            self.write()

    def ended(self, reason: str) -> None:
        """The session is over, for `reason`."""
        if self.was_busy and self.last_sample is not None:  # busy at the last sample: it ended since, half-way
            self.busy += max(0.0, time.time() - self.last_sample) / 2
        self.doc["ended_at"] = iso(time.time())
        self.doc["end_reason"] = reason[:64]
        self.write()

    def write(self) -> None:
        """Write usage.json now (a failure is ignored: the next write may succeed)."""
        self.doc["busy_seconds"] = round(self.busy, 1)
        self.doc["updated_at"] = iso(time.time())
        self.written = time.monotonic()
        try:
            write_private(self.path, json.dumps(self.doc, indent=2).encode())
        except OSError:  # a full disk or quota: statistics must never end the session (state.json says what matters)
            pass
