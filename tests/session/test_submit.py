"""Submission: Ctrl-C while the scheduler accepts the job never leaves a job without a record;
the ready clock runs only once the job does."""

from __future__ import annotations

import os
import shlex
import threading
import time
from pathlib import Path

import pytest

from hpcjup.errors import ConnectError
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.session.request import StartRequest
from hpcjup.session.submit import submit
from hpcjup.session.wait import ReadyWaiter
from hpcjup.transport.base import Transport
from hpcjup.transport.local import LocalTransport


class Home(LocalTransport):
    def __init__(self, home: Path) -> None:
        self._root = str(home)

    def home(self) -> str:
        return self._root


class SlowScheduler(Scheduler):
    """Accepts the job after Ctrl-C has arrived (as a slow sbatch would), and remembers cancels."""

    name = "slurm"

    def __init__(self) -> None:
        self.cancelled: list[tuple[str, bool]] = []
        self.states = [JobState.RUNNING]

    def render(self, spec: JobSpec) -> str:
        return "#!/bin/sh\n"

    # The user presses Ctrl-C while sbatch runs (in the same remote command as the upload).
    submit_command = f"kill -INT {os.getpid()}; sleep 0.2; echo 123"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return stdout.strip()

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        return JobStatus(job_id, self.states.pop(0) if len(self.states) > 1 else self.states[0])

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        self.cancelled.append((job_id, graceful))


def test_ctrl_c_during_submission_cancels_the_accepted_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the upload checks that the home it was given is the home
    scheduler = SlowScheduler()
    with pytest.raises(KeyboardInterrupt):
        submit(Home(tmp_path), scheduler, StartRequest(name="lab", dask=None))
    assert scheduler.cancelled == [("123", False)]  # the job the scheduler accepted is not left behind
    assert not (tmp_path / ".hpcjup/sessions/lab").exists()  # and nothing else either


def test_ready_clock_starts_when_the_job_runs(tmp_path: Path) -> None:
    """CONFIGURING (nodes booting from power saving) does not count against the ready timeout."""
    paths = SessionPaths(str(tmp_path), "lab")
    Path(paths.dir).mkdir(parents=True)
    record = SessionRecord("lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00")
    scheduler = SlowScheduler()
    scheduler.states = [JobState.CONFIGURING] * 4 + [JobState.RUNNING]
    waiter = ReadyWaiter(Home(tmp_path), scheduler, record, paths, ready_timeout=2.0)

    def jupyter_answers() -> None:
        time.sleep(4.5)  # longer than ready_timeout, all of it CONFIGURING but the last moment
        doc = '{"job_id": "7", "node": "node1", "address": "127.0.0.1", "port": 1, "token": "%s"}' % ("a" * 32)
        Path(paths.connection).write_text(doc)

    threading.Thread(target=jupyter_answers).start()
    conn = waiter.wait()
    assert conn.node == "node1" and waiter.queries >= 3


def test_a_reason_that_never_clears_ends_the_wait(tmp_path: Path) -> None:
    """PartitionConfig (more nodes than the partition has) will not clear: the wait ends at once, in words;
    the waiter itself cancels nothing (attach only says so; start cancels)."""
    from hpcjup.errors import JobCannotStart
    from hpcjup.schedulers.slurm import Slurm

    class Pending(SlowScheduler):
        def status(self, transport: Transport, job_id: str) -> JobStatus:
            return JobStatus(job_id, JobState.PENDING, reason="PartitionConfig")

        def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
            return Slurm().never_starts(status)

    paths = SessionPaths(str(tmp_path), "lab")
    Path(paths.dir).mkdir(parents=True)
    scheduler = Pending()
    waiter = ReadyWaiter(
        Home(tmp_path), scheduler, SessionRecord("lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00"), paths
    )
    started = time.monotonic()
    with pytest.raises(JobCannotStart) as info:
        waiter.wait()
    assert time.monotonic() - started < 5 and "--nodes" in (info.value.hint or "")
    assert "PartitionConfig" in info.value.message and scheduler.cancelled == []


@pytest.mark.parametrize(
    "reason,hopeless",
    [
        ("PartitionNodeLimit", True),
        ("QOSMaxWallDurationPerJobLimit", True),
        ("AssocMaxNodesPerJobLimit", True),
        ("ReqNodeNotAvail, UnavailableNodes:node[1-2]", True),
        ("ReqNodeNotAvail, Reserved for maintenance", False),
        ("Priority", False),
        ("Resources", False),
        (None, False),
    ],
)
def test_slurm_reasons_that_never_clear(reason: str | None, hopeless: bool) -> None:
    from hpcjup.schedulers.slurm import Slurm

    assert (Slurm().never_starts(JobStatus("1", JobState.PENDING, reason=reason)) is not None) is hopeless


class Quick(SlowScheduler):
    """Accepts the job at once; needs `commands[0]` on the PATH (the upload checks it)."""

    submit_command = "echo 42"

    def __init__(self, commands: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.commands = commands


class Remembered(LocalTransport):
    """A host whose home the laptop remembers wrongly (the last start saw another one)."""

    def __init__(self, remembered: str) -> None:
        self._home = remembered

    def home(self) -> str:
        assert self._home is not None
        return self._home


def test_a_remembered_home_that_changed_is_relearned_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, old = tmp_path / "home", tmp_path / "old-home"
    home.mkdir()
    old.mkdir()
    monkeypatch.setenv("HOME", str(home))
    transport = Remembered(str(old))
    relearned: list[str] = []

    def relearn() -> Scheduler:
        transport._home = str(home)
        relearned.append("home")
        return Quick()

    record, paths = submit(transport, Quick(), StartRequest(name="lab", dask=None), relearn=relearn)
    assert relearned == ["home"] and record.job_id == "42" and paths.dir == str(home / ".hpcjup/sessions/lab")
    assert (home / ".hpcjup/sessions/lab/session.json").exists() and not (old / ".hpcjup").exists()


def test_a_scheduler_that_is_gone_is_asked_for_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    gone = Quick(commands=("hpcjup-no-such-scheduler-command",))
    record, _ = submit(Home(tmp_path), gone, StartRequest(name="lab", dask=None), relearn=lambda: Quick())
    assert record.job_id == "42"


def test_without_relearning_a_changed_host_is_an_error_that_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcjup.errors import SubmitError

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(SubmitError, match="not as the last start found it"):
        submit(Remembered(str(tmp_path)), Quick(), StartRequest(name="lab", dask=None))
    assert not (tmp_path / ".hpcjup").exists() and not (home / ".hpcjup").exists()


def test_a_name_whose_job_was_requeued_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its state.json says "ended" (the launcher was preempted), but the scheduler holds the job to run it again
    in that directory: the name is in use, and the directory is left whole."""
    from hpcjup.errors import UsageError

    monkeypatch.setenv("HOME", str(tmp_path))
    first = Quick()
    submit(Home(tmp_path), first, StartRequest(name="lab", dask=None))
    state = tmp_path / ".hpcjup/sessions/lab/state.json"
    state.write_text('{"schema": 1, "state": "ended", "reason": "stopped"}')
    requeued = Quick()
    requeued.states = [JobState.PENDING]
    with pytest.raises(UsageError, match="in use"):
        submit(Home(tmp_path), requeued, StartRequest(name="lab", dask=None))
    assert state.exists() and requeued.cancelled == []
    over = Quick()
    over.states = [JobState.COMPLETED]
    record, _ = submit(Home(tmp_path), over, StartRequest(name="lab", dask=None))  # asked: it is over
    assert record.job_id == "42" and not state.exists()


def test_a_connection_file_of_another_job_is_not_taken(tmp_path: Path) -> None:
    """connection.json written by another job (a requeued one that once held the directory) is not this session's."""
    from hpcjup.errors import DamagedDocument

    paths = SessionPaths(str(tmp_path), "lab")
    Path(paths.dir).mkdir(parents=True)
    doc = '{"job_id": "6", "node": "node1", "address": "127.0.0.1", "port": 1, "token": "%s"}' % ("a" * 32)
    Path(paths.connection).write_text(doc)
    record = SessionRecord("lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00")
    with pytest.raises(DamagedDocument, match="job 6"):
        ReadyWaiter(Home(tmp_path), SlowScheduler(), record, paths, ready_timeout=5).wait()


@pytest.mark.parametrize("unsafe", ["group-writable", "world-writable", "another user's"])
def test_a_session_root_that_is_not_the_users_alone_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unsafe: str
) -> None:
    """Checked in the upload's own command (no extra round trip); nothing is created or submitted."""
    import pwd

    from hpcjup.errors import ExitCode, UnsafeSessionRoot

    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".hpcjup"
    root.mkdir(mode=0o700)
    if unsafe == "another user's":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
    else:
        root.chmod(0o770 if unsafe == "group-writable" else 0o703)
    scheduler = Quick()
    with pytest.raises(UnsafeSessionRoot) as info:
        submit(Home(tmp_path), scheduler, StartRequest(name="lab", dask=None))
    assert info.value.exit_code == ExitCode.REMOTE and str(root) in info.value.message
    assert not (root / "sessions").exists() or not any((root / "sessions").iterdir())


def test_a_lost_race_for_a_reused_name_leaves_no_hidden_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ended session is moved aside, and another start takes the name that very moment: the claim is lost,
    and the moved-aside directory goes too (it was left as a hidden .old-TAG)."""
    from hpcjup.errors import UsageError

    monkeypatch.setenv("HOME", str(tmp_path))
    over = Quick()
    over.states = [JobState.COMPLETED]
    submit(Home(tmp_path), over, StartRequest(name="lab", dask=None))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    racer = bin_dir / "mv"  # the other start: it claims the name right after the old session is moved aside
    racer.write_text('#!/bin/sh\n/bin/mv "$@" || exit\ncase "$3" in */.old-*) mkdir "${2}" ;; esac\n')
    racer.chmod(0o700)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(UsageError, match="in use"):
        submit(Home(tmp_path), over, StartRequest(name="lab", dask=None))
    assert sorted(p.name for p in (tmp_path / ".hpcjup/sessions").iterdir()) == ["lab"]


class DroppingHome(Home):
    """The connection drops right after the command that uploads and submits: every later call fails."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.dropped = False

    def run_raw(self, argv, *, input=None, timeout=120.0):  # type: ignore[no-untyped-def]
        if self.dropped:
            raise ConnectError("The SSH connection to h is gone.")
        result = super().run_raw(argv, input=input, timeout=timeout)
        self.dropped = True
        return result

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        if self.dropped:
            raise ConnectError("The SSH connection to h is gone.")
        super().write_file(path, data, mode)


class Accepting(SlowScheduler):
    """Accepts the job at once and prints what `output` says (each adapter's own words)."""

    def __init__(self, output: str = "123") -> None:
        super().__init__()
        self.submit_command = "printf '%s\\n' " + shlex.quote(output)


def test_a_connection_lost_right_after_the_submission_leaves_the_job_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """session.json is written by the same remote command that submits (issue 23): before, the laptop wrote it
    in a second command, and a drop in between left a running job with no record."""
    monkeypatch.setenv("HOME", str(tmp_path))
    record, paths = submit(DroppingHome(tmp_path), Accepting(), StartRequest(name="lab", dask=None))
    assert record.job_id == "123"
    on_host = SessionRecord.from_json(Path(paths.record).read_bytes())
    assert on_host == record  # the very record the laptop would have written
    assert not Path(paths.file("session.json.in")).exists()


@pytest.mark.parametrize(
    ("adapter", "output"),
    [
        ("slurm", "4242"),
        ("slurm", "4242;cluster2"),
        ("pbs", "1234.pbs01"),
        ("sge", "77"),
        ("lsf", "Job <5150> is submitted to queue <normal>."),
        ("local", "31337.1829311"),
    ],
)
def test_the_claim_reads_each_schedulers_job_id_as_its_adapter_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str, output: str
) -> None:
    """The claim script's own reading of the submit command's output agrees with the adapter's parse_submission
    (its recorded words); where they could differ, the laptop's parse wins and it writes the record itself."""
    from hpcjup.schedulers import get_scheduler

    monkeypatch.setenv("HOME", str(tmp_path))
    real = get_scheduler(adapter)
    scheduler = Accepting(output)
    monkeypatch.setattr(scheduler, "parse_submission", real.parse_submission)
    writes: list[str] = []
    home = Home(tmp_path)
    original = home.write_file
    monkeypatch.setattr(
        home, "write_file", lambda path, data, mode=0o600: writes.append(path) or original(path, data, mode)
    )
    record, paths = submit(home, scheduler, StartRequest(name="lab", dask=None))
    assert record.job_id == real.parse_submission(output, "")
    assert SessionRecord.from_json(Path(paths.record).read_bytes()).job_id == record.job_id
    assert paths.record not in writes  # recorded on the host by the claim itself: no second remote command


def test_an_id_the_claim_cannot_read_is_recorded_by_the_laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An array job's "123.1-4:1" (qsub -terse) has characters the claim does not take: the laptop records 123."""
    from hpcjup.schedulers import get_scheduler

    monkeypatch.setenv("HOME", str(tmp_path))
    scheduler = Accepting("123.1-4:1")
    monkeypatch.setattr(scheduler, "parse_submission", get_scheduler("sge").parse_submission)
    record, paths = submit(Home(tmp_path), scheduler, StartRequest(name="lab", dask=None))
    assert SessionRecord.from_json(Path(paths.record).read_bytes()).job_id == record.job_id == "123"


# --- environments (issue 20 phase 2): the kernel syntax, names computed locally, the upload's checks ---

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hpcjup.envs.identity import env_name  # noqa: E402
from hpcjup.envs.spec import EnvSpec  # noqa: E402
from hpcjup.session import envplan, hostfacts, kernelkinds  # noqa: E402
from hpcjup.session.store import LocalStore  # noqa: E402


@given(st.text(max_size=80))
def test_parse_kernel_takes_a_name_only_when_it_is_one(text: str) -> None:
    """`[NAME=]SPEC`: a NAME is split off only when it is a valid kernel name; the rest is the spec, unchanged."""
    try:
        name, spec = kernelkinds.parse_kernel(text)
    except Exception as exc:
        assert not text.strip() and "empty" in str(exc)
        return
    if name is None:
        assert spec == text
    else:
        assert kernelkinds.KERNEL_NAME.fullmatch(name) and f"{name}={spec}" == text and spec


@given(st.text(min_size=1, max_size=60).filter(lambda s: "\x00" not in s))
def test_kernel_names_derived_from_any_path_are_valid(word: str) -> None:
    for source in (f"/x/{word}", f"cluster:/opt/{word}", f"/x/{word}/requirements.txt"):
        assert kernelkinds.KERNEL_NAME.fullmatch(kernelkinds.kernel_name(source)), source


def test_kernel_names_are_unique_and_cluster_prefixes_checked(tmp_path: Path) -> None:
    for d in ("a/analysis", "b/analysis"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "requirements.txt").write_text("six\n")

    class S:
        def __init__(self, **v: object) -> None:
            self.v = v

        def value(self, key: str) -> object:
            return self.v.get(key)

    p = envplan.plan(S(env=str(tmp_path / "a/analysis"), kernels=(str(tmp_path / "b/analysis"), "py=cluster:/opt/x/")))
    assert p is not None and [k.name for k in p.kernels] == ["analysis", "analysis-2", "py"]
    assert p.kernels[2].prefix == "/opt/x"
    with pytest.raises(Exception, match="not an absolute path"):
        envplan.plan(S(kernels=("cluster:relative/venv",)))
    with pytest.raises(Exception, match="image"):
        envplan.plan(S(env=str(tmp_path / "a/analysis"), image="x.sif"))
    assert envplan.bare(S(python="/usr/bin/python3")) and not envplan.bare(S(venv="~/v"))


def test_remembered_facts_name_the_envs_as_the_host_does(tmp_path: Path) -> None:
    """A warm start names every env locally with the host's rule (identity.env_name): the same names the
    probe prints; nothing remembered (or a root not seen) means asking the host."""
    store = LocalStore(tmp_path / "state")
    hostfacts.save(store, "h", hostfacts.HostFacts("/home/u", "slurm"))
    spec = EnvSpec("pip", "/laptop/analysis", {"requirements.txt": b"six\n"})
    p = envplan.Plan(
        ".hpcjup/envs", "python3", (kernelkinds.Kernel("analysis", spec), kernelkinds.Kernel("b", prefix="~/v"))
    )
    assert envplan.locate(p, hostfacts.load(store, "h"), "/home/u") is None
    facts = hostfacts.learn(
        store,
        "h",
        roots={".hpcjup/envs": "/home/u/.hpcjup/envs"},
        pythons={"python3": ["3.11", "x86_64", "glibc2.36"]},
        current={".hpcjup/envs": ""},
    )
    assert facts == hostfacts.load(store, "h")  # what was saved reads back the same
    located = envplan.locate(p, facts, "/home/u")
    assert located is not None
    user = f"/home/u/.hpcjup/envs/{env_name('env', spec.digest, '3.11', 'x86_64', 'glibc2.36')}"
    server = f"/home/u/.hpcjup/envs/{env_name('server', p.server.digest, '3.11', 'x86_64', 'glibc2.36')}"
    assert located.kernels == (("analysis", f"{user}/bin/python"), ("b", "/home/u/v/bin/python"))
    assert located.server_python == f"{server}/bin/python" and located.dask_python == f"{user}/bin/python"
    assert located.checks == ("c:/home/u/.hpcjup/envs:", f"b:{server}", f"b:{user}", "p:/home/u/v")
    assert located.envs == (server, user, "/home/u/v")


def test_the_upload_refuses_before_claiming_when_an_env_is_missing(tmp_path: Path) -> None:
    """The claim script's checks run first: a missing env (76), prefix (75) or JupyterLab (79) claims nothing."""
    from hpcjup.session.claim import _CLAIM, _RECORDED, JOB_ID_SLOT, RECORD_TEMPLATE

    built = tmp_path / "built"
    built.mkdir()
    (built / ".hpcjup-env.json").write_text("{}")
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").write_text("")
    (prefix / "bin" / "python").chmod(0o755)
    root = tmp_path / "sessions"

    def claim(*checks: str) -> int:
        home = os.path.expanduser("~")
        argv = ["sh", "-c", _CLAIM, "sh", str(root), "n", "t", "", "true", home, "", "claimed", _RECORDED]
        argv += [RECORD_TEMPLATE, JOB_ID_SLOT]
        import subprocess

        from hpcjup.transport.batch import pack

        return subprocess.run([*argv, *checks], input=pack({"f": (b"x", 0o600)}), capture_output=True).returncode

    assert claim(f"b:{tmp_path}/none") == 76 and not root.exists()
    # Its tree dropped (envs/pack.py): built while its image is there; `t:` (env_mode direct) wants the tree back.
    assert claim(f"b:{built}") == 76 and claim(f"t:{built}") == 76 and not root.exists()
    (tmp_path / "built.sqsh").write_bytes(b"image")
    assert claim(f"t:{built}") == 76 and not root.exists()
    (built / "bin").mkdir()
    assert claim(f"c:{tmp_path}:server-x") == 76
    assert claim(f"p:{tmp_path}/none") == 75
    assert claim("j:/nonexistent/python") == 79 and not root.exists()
    assert claim(f"b:{built}", f"p:{prefix}", f"c:{tmp_path}:") == 0 and (built / ".hpcjup-used").exists()
    assert (root / "n" / "f").read_bytes() == b"x"  # then claimed and submitted (`true`) as before
