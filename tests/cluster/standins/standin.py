"""Stand-ins for PBS Pro's and LSF's commands, for a login node that has neither (tests only).

PBS Pro and LSF cannot be installed on the test machines. These commands run each job for real on
this machine (in its own session, as the batch systems' execution daemons do), keep a small state
file per user, and print exactly the formats recorded from the real systems
(tests/schedulers/data/{pbs,lsf}/SOURCES.md). Signals follow the real systems: `qdel` sends SIGTERM
and SIGKILL after the queue's kill_delay; `qsig -s SIG` sends one signal; `bkill` sends SIGINT,
SIGTERM and SIGKILL, JOB_TERMINATE_INTERVAL apart; `bkill -s SIG` one signal; the job's processes
are its session's. The job's output is written to its -o file as it runs (PBS's direct write,
`-k oed`, which the adapter asks for). Usage (through the wrappers the fixture writes): standin.py pbs|lsf COMMAND ARGS...

Standard library only; runs as the cluster user with the login node's python3.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = json.loads((HERE / "standin.json").read_text()) if (HERE / "standin.json").exists() else {}
SYSTEM = sys.argv[1] if len(sys.argv) > 1 else ""
STATE = Path(os.environ.get("HOME", "/tmp")) / ".hpcjup-standin" / SYSTEM
HOST = socket.gethostname().split(".")[0]
SERVER = CONFIG.get("server", "standin")
QUEUES: dict = CONFIG.get("queues", {"workq": {"max_walltime": 86400}})
DEFAULT_QUEUE = CONFIG.get("default_queue", next(iter(QUEUES)))
PEND_SECONDS = float(CONFIG.get("pend_seconds", 1.0))
KILL_DELAY = float(CONFIG.get("kill_delay", 10))  # PBS kill_delay, LSF JOB_TERMINATE_INTERVAL
PBS_VERSION = "2022.1.5.20240101000000"


# -- the state file: one JSON document per user and system, changed under a lock ----------------------
@contextmanager
def jobs(write: bool = True):
    STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(STATE / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = STATE / "jobs.json"
        data = json.loads(path.read_text()) if path.exists() else {"next": 1000, "jobs": {}}
        yield data
        if write:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)


def ctime(t: float | None) -> str:
    return time.ctime(t) if t else ""


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


# -- the job's processes ----------------------------------------------------------------------------
def session_pids(sid: int) -> list[int]:
    """Processes whose session is the job's (what the execution daemon kills), zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def signal_job(job: dict, sig: int) -> None:
    for pid in session_pids(job.get("sid") or -1):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def detached(*argv: str) -> None:
    """Run this engine again, detached from the caller (a job's runner, a delayed kill)."""
    subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), SYSTEM, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def kill_sequence(job_id: str, signals: list[int]) -> None:
    """Send the signals in turn, KILL_DELAY apart, until the job's processes are gone."""
    for i, sig in enumerate(signals):
        with jobs(write=False) as data:
            job = data["jobs"].get(job_id, {})
        if not session_pids(job.get("sid") or -1):
            return
        signal_job(job, sig)
        if i < len(signals) - 1:
            deadline = time.time() + KILL_DELAY
            while time.time() < deadline and session_pids(job.get("sid") or -1):
                time.sleep(0.2)


def run_job(job_id: str) -> None:
    """The execution daemon's part: wait in the queue, run the script in its own session, record the end."""
    time.sleep(PEND_SECONDS)
    with jobs() as data:
        job = data["jobs"][job_id]
        if job["state"] != "queued":
            return  # deleted while queued
        have = QUEUES.get(job["queue"], {}).get("ncpus")
        if have is not None and job["nodes"] * job["cpus"] > have:  # what PBS's scheduler says, for ever
            asked = job["nodes"] * job["cpus"]
            job.update(
                comment=f"Can Never Run: Insufficient amount of resource: ncpus (R: {asked} A: {have} T: {have})"
            )
            return
        granted = fit(job)
        if granted is None:  # it would run into the reservation: it waits (until qdel, in the stand-in)
            job.update(comment="Not Running: Job would conflict with reservation or top job")
            return
        job.update(state="running", stime=time.time(), walltime=granted)
    user = pwd.getpwuid(os.getuid())
    env, cwd, out = job_environment(job, user)
    log = open(out, "ab") if out else subprocess.DEVNULL
    # PBS runs the script with the user's login shell as a login shell (~/.profile, no -V); LSF with the
    # submitting environment, as a plain shell.
    shell = user.pw_shell or "/bin/sh"
    argv = [shell, job["script"]]
    if SYSTEM == "pbs":
        # The login profile resets PATH; a PBS site's /etc/profile.d/pbs.sh then adds its commands
        # (/opt/pbs/bin). Played here without touching /etc: the profile, then the stand-ins, then the script.
        login = 'PATH="$1:$PATH"; export PATH; exec "$0" "$2"'
        argv = [shell, "-l", "-c", login, shell, str(HERE / "bin"), job["script"]]
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with jobs() as data:
        data["jobs"][job_id].update(pid=proc.pid, sid=proc.pid)
        job = data["jobs"][job_id]
    limit, warn = job.get("walltime"), job.get("warn")
    warned = timed_out = False
    while proc.poll() is None:
        elapsed = time.time() - job["stime"]
        if warn and not warned and limit and elapsed >= limit - warn[1]:
            warned = True
            signal_job(job, warn[0])  # LSF's warning action (-wa SIG -wt MINUTES)
        if limit and elapsed >= limit and not timed_out:
            timed_out = True
            detached("_kill", job_id, *(["INT", "TERM", "KILL"] if SYSTEM == "lsf" else ["TERM", "KILL"]))
        time.sleep(0.2)
    code = proc.returncode
    kill_sequence(job_id, [signal.SIGTERM, signal.SIGKILL])  # what the script left behind in its session
    with jobs() as data:
        job = data["jobs"][job_id]
        job.update(state="finished", etime=time.time(), code=code, timed_out=timed_out)


def fit(job: dict) -> int | None:
    """The walltime the job starts with, or None if it cannot start now. A queue's `free_for` is how long
    its nodes stay free before a reservation (or the top job) takes them: a job asking longer waits, a
    shrink-to-fit job (PBS min_walltime/max_walltime) starts with the longest walltime that fits, as PBS's
    scheduler shrinks it (src/scheduler/check.cpp: "Considering shrinking job to duration=...")."""
    window = QUEUES.get(job["queue"], {}).get("free_for")
    if job.get("min_walltime") is not None:
        longest = job["max_walltime"] if window is None else min(job["max_walltime"], window)
        return longest if longest >= job["min_walltime"] else None
    return job["walltime"] if window is None or job["walltime"] <= window else None


def node_names(count: int) -> list[str]:
    """The allocation's hosts: this machine first (the job runs here), then names for the others, which
    pbsdsh/blaunch run on this machine too (launch_here records each)."""
    return [HOST, *(f"{HOST}-node{i}" for i in range(2, count + 1))]


def output_file(job: dict, path: str | None) -> str | None:
    """Where the job's output goes: -o FILE, or a file named as the real systems name it in -o DIR/
    (PBS: NAME.oSEQ; LSF's %J is the job id)."""
    if not path:
        return None
    path = os.path.join(job["workdir"], path.replace("%J", job["id"]))
    if path.endswith("/") or os.path.isdir(path):
        path = os.path.join(path, f"{job['name']}.o{job['id'].split('.')[0]}")
    return path


def job_environment(job: dict, user: pwd.struct_passwd) -> tuple[dict[str, str], str, str | None]:
    """The environment, working directory and output file the real system gives a batch job."""
    spool = STATE / "spool" / job["id"]
    spool.mkdir(parents=True, exist_ok=True)
    hosts = node_names(job["nodes"])
    if SYSTEM == "pbs":
        # No -V: only the basics, PBS_O_* from qsub's environment, and the job's own variables.
        nodefile = spool / "nodefile"
        nodefile.write_text("".join(f"{h}\n" for h in hosts))
        submit = job["submit_env"]
        env = {
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
            "SHELL": user.pw_shell,
            "PATH": "/bin:/usr/bin",
            "LANG": submit.get("LANG", "C.UTF-8"),
            "PBS_JOBID": job["id"],
            "PBS_JOBNAME": job["name"],
            "PBS_NODEFILE": str(nodefile),
            "PBS_O_WORKDIR": job["workdir"],
            "PBS_O_HOME": submit.get("HOME", user.pw_dir),
            "PBS_O_PATH": submit.get("PATH", ""),
            "PBS_O_LOGNAME": user.pw_name,
            "PBS_O_SHELL": submit.get("SHELL", user.pw_shell),
            "PBS_O_HOST": HOST,
            "PBS_O_QUEUE": job["queue"],
            "PBS_QUEUE": job["queue"],
            "PBS_ENVIRONMENT": "PBS_BATCH",
            "PBS_JOBDIR": user.pw_dir,
            "PBS_TASKNUM": "1",
            "PBS_NODENUM": "0",
            "PBS_MOMPORT": "15003",
            "TMPDIR": str(spool),
            "NCPUS": str(job["cpus"]),
            "OMP_NUM_THREADS": str(job["cpus"]),
        }
        return env, user.pw_dir, output_file(job, job.get("output"))  # the job starts in the home directory
    # LSF copies the submitting environment into the job and adds its own.
    hostfile = spool / "hostfile"
    hostfile.write_text("".join(f"{h}\n" for h in hosts for _ in range(job["cpus"])))
    env = dict(job["submit_env"])
    env.update(
        LSB_JOBID=job["id"],
        LSB_JOBNAME=job["name"],
        LSB_QUEUE=job["queue"],
        LSB_HOSTS=" ".join(h for h in hosts for _ in range(job["cpus"])),
        LSB_MCPU_HOSTS=" ".join(f"{h} {job['cpus']}" for h in dict.fromkeys(hosts))
        if job["nodes"] == 1
        else " ".join(f"{h} {job['cpus']}" for h in hosts),
        LSB_DJOB_NUMPROC=str(job["nodes"] * job["cpus"]),
        LSB_DJOB_HOSTFILE=str(hostfile),
        LSB_JOBFILENAME=job["script"],
        LSB_SUB_HOST=HOST,
        LSB_PROJECT_NAME=job.get("project") or "default",
        LSB_JOBINDEX="0",
        LSFUSER=user.pw_name,
    )
    return env, job["workdir"], output_file(job, job.get("output"))


# -- directives -------------------------------------------------------------------------------------
def directives(script: str, prefix: str) -> list[str]:
    """The directive words of a script (until the first command line), as the real qsub/bsub read them."""
    words: list[str] = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(prefix):
            words += shlex.split(stripped[len(prefix) :])
        elif stripped and not stripped.startswith("#"):
            break
    return words


def seconds(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    total = 0
    for p in parts:
        total = total * 60 + p
    return total


def fail(message: str, code: int) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


# -- PBS ------------------------------------------------------------------------------------------------
def qsub(args: list[str]) -> None:
    script_path = args[-1] if args and not args[-1].startswith("-") else None
    text = Path(script_path).read_text() if script_path else sys.stdin.read()
    words = directives(text, "#PBS") + (args[:-1] if script_path else args)
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        if words[i].startswith("-") and i + 1 < len(words):
            opts.setdefault(words[i], []).append(words[i + 1])
            i += 2
        else:
            i += 1
    queue = (opts.get("-q") or [DEFAULT_QUEUE])[-1]
    if queue not in QUEUES:
        fail("qsub: Unknown queue", 1)
    # -l a=1,b=2 is two resources; select=2:ncpus=4 is one.
    resources = dict(item.split("=", 1) for spec in opts.get("-l", []) for item in spec.split(",") if "=" in item)
    select = resources.get("select", "1")
    chunk = dict(part.split("=", 1) for part in select.split(":")[1:] if "=" in part)
    walltime = (
        seconds(resources["walltime"]) if "walltime" in resources else QUEUES[queue].get("default_walltime", 3600)
    )
    shrink = {key: seconds(resources[key]) for key in ("min_walltime", "max_walltime") if key in resources}
    if "max_walltime" in shrink and "min_walltime" not in shrink:
        fail('qsub: Cannot have "max_walltime" without "min_walltime"', 1)  # pbs_messages.c msg_max_no_minwt
    if shrink and shrink["min_walltime"] > shrink.get("max_walltime", 10**9):
        fail('qsub: "min_walltime" can not be greater than "max_walltime"', 1)  # msg_min_gt_maxwt
    if shrink:
        shrink.setdefault("max_walltime", QUEUES[queue].get("max_walltime", 10**9))
    if max(walltime, shrink.get("max_walltime", 0)) > QUEUES[queue].get("max_walltime", 10**9):
        fail("qsub: Job violates queue and/or server resource limits", 1)
    submit(
        text,
        name=(opts.get("-N") or [Path(script_path).name if script_path else "STDIN"])[-1],
        queue=queue,
        nodes=int(select.split(":")[0]),
        cpus=int(chunk.get("ncpus", 1)),
        walltime=walltime,
        output=(opts.get("-o") or [None])[-1],
        account=(opts.get("-A") or [None])[-1],
        select=select,
        **shrink,
    )


def submit(text: str, **fields) -> str:
    with jobs() as data:
        number = data["next"]
        data["next"] += 1
        job_id = f"{number}.{SERVER}" if SYSTEM == "pbs" else str(number)
        spool = STATE / "spool" / job_id
        spool.mkdir(parents=True, exist_ok=True)
        script = spool / "script"
        script.write_text(text)
        script.chmod(0o700)
        data["jobs"][job_id] = dict(
            fields,
            id=job_id,
            state="queued",
            qtime=time.time(),
            script=str(script),
            workdir=os.getcwd(),
            submit_env=dict(os.environ),
            user=pwd.getpwuid(os.getuid()).pw_name,
        )
    detached("_run", job_id)
    if SYSTEM == "pbs":
        print(job_id)
    elif fields.get("explicit_queue"):
        print(f"Job <{job_id}> is submitted to queue <{fields['queue']}>.")
    else:
        print(f"Job <{job_id}> is submitted to default queue <{fields['queue']}>.")
    return job_id


PBS_STATE = {"queued": "Q", "running": "R", "finished": "F"}


def pbs_attributes(job: dict) -> dict:
    """One job as `qstat -f -F json` shows it (qstat.c: resources nested, numbers as numbers, times as ctime)."""
    state = PBS_STATE[job["state"]]
    attrs: dict = {
        "Job_Name": job["name"],
        "Job_Owner": f"{job['user']}@{HOST}",
        "job_state": state,
        "queue": job["queue"],
        "server": SERVER,
        "ctime": ctime(job["qtime"]),
        "Hold_Types": "n",
        "Join_Path": "oe",
        "Keep_Files": "oed",
        "qtime": ctime(job["qtime"]),
        "Resource_List": {
            "ncpus": job["nodes"] * job["cpus"],
            "nodect": job["nodes"],
            "place": "scatter" if job["nodes"] > 1 else "pack",
            "select": job["select"],
        },
    }
    if job.get("min_walltime") is not None:  # shrink-to-fit: walltime only once PBS has chosen it
        attrs["Resource_List"].update(min_walltime=hms(job["min_walltime"]), max_walltime=hms(job["max_walltime"]))
    if job.get("min_walltime") is None or job.get("stime"):
        attrs["Resource_List"]["walltime"] = hms(job["walltime"])
    if job.get("account"):
        attrs["Account_Name"] = job["account"]
    vnodes = "+".join(f"({host}:ncpus={job['cpus']})" for host in node_names(job["nodes"]))
    if state == "Q":
        attrs["comment"] = job.get("comment") or (
            f"Not Running: Insufficient amount of resource: ncpus (R: {job['cpus']} A: 0 T: {job['cpus']})"
        )
        attrs["estimated"] = {"exec_vnode": vnodes, "start_time": ctime(job["qtime"] + PEND_SECONDS)}
    if state in ("R", "F") and job.get("stime"):
        used = (job.get("etime") or time.time()) - job["stime"]
        attrs["exec_host"] = "+".join(f"{host}/0*{job['cpus']}" for host in node_names(job["nodes"]))
        attrs["exec_vnode"] = vnodes
        attrs["resources_used"] = {
            "cpupercent": 0,
            "cput": "00:00:00",
            "mem": "0kb",
            "ncpus": job["nodes"] * job["cpus"],
            "walltime": hms(used),
        }
        attrs["stime"] = ctime(job["stime"])
        attrs["comment"] = f"Job run at {time.strftime('%a %b %d at %H:%M', time.localtime(job['stime']))} on {vnodes}"
    if state == "F":
        if job.get("code") is None:
            attrs["comment"] = "Job deleted as result of a qdel"
        else:
            attrs["comment"] += " and finished"
            code = job["code"]
            attrs["Exit_status"] = -29 if job.get("timed_out") else (256 - code if code < 0 else code)
    return attrs


def qstat(args: list[str]) -> None:
    flags = {a for a in args if a.startswith("-")}
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and not (i and args[i - 1] == "-F")]
    if "-Q" in flags:
        queues = {
            q: {
                "queue_type": "Execution",
                "total_jobs": 0,
                "resources_max": {"walltime": hms(c.get("max_walltime", 86400))},
                "enabled": "True",
                "started": "True",
            }
            for q, c in QUEUES.items()
            if not ids or q in ids
        }
        for q in ids:
            if q not in QUEUES:
                sys.stderr.write(f"qstat: Unknown queue destination {q}\n")
        print(
            json.dumps(
                {"timestamp": int(time.time()), "pbs_version": PBS_VERSION, "pbs_server": SERVER, "Queue": queues},
                indent=4,
            )
        )
        sys.exit(0 if queues else 1)
    if "--version" in flags:
        print(f"pbs_version = {PBS_VERSION.split('.')[0]}.{PBS_VERSION.split('.')[1]}.{PBS_VERSION.split('.')[2]}")
        return
    with jobs(write=False) as data:
        known = data["jobs"]
    shown, failed = {}, False
    for job_id in ids:
        key = job_id if job_id in known else next((k for k in known if k.split(".")[0] == job_id.split(".")[0]), None)
        if key is None:
            sys.stderr.write(f"qstat: Unknown Job Id {job_id}\n")
            failed = True
        elif known[key]["state"] == "finished" and "-x" not in flags:
            sys.stderr.write(f"qstat: {key} Job has finished, use -x or -H to obtain historical job information\n")
            failed = True
        else:
            shown[key] = pbs_attributes(known[key])
    if "json" in args:
        root = {"timestamp": int(time.time()), "pbs_version": PBS_VERSION, "pbs_server": SERVER}
        if shown:
            root["Jobs"] = shown
        print(json.dumps(root, indent=4))
    else:
        for key, attrs in shown.items():
            print(f"Job Id: {key}")
            for name, value in attrs.items():
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for sub, v in items:
                    print(f"    {name}{'.' + sub if sub else ''} = {v}")
            print()
    sys.exit(153 if failed else 0)  # PBSE_UNKJOBID & 0xff, as qstat exits


def find(data: dict, job_id: str) -> dict | None:
    return data["jobs"].get(job_id) or next(
        (j for k, j in data["jobs"].items() if k.split(".")[0] == job_id.split(".")[0]), None
    )


def qdel(args: list[str]) -> None:
    failed = False
    for job_id in (a for a in args if not a.startswith("-")):
        with jobs() as data:
            job = find(data, job_id)
            if job is None:
                sys.stderr.write(f"qdel: Unknown Job Id {job_id}\n")
                failed = True
                continue
            if job["state"] == "finished":
                sys.stderr.write(f"qdel: Job has finished {job_id}\n")
                failed = True
                continue
            if job["state"] == "queued":
                job.update(state="finished", etime=time.time(), code=None)
                continue
        detached("_kill", job["id"], "TERM", "KILL")
    sys.exit(1 if failed else 0)


def qsig(args: list[str]) -> None:
    sig = signal.Signals["SIG" + args[args.index("-s") + 1].removeprefix("SIG")] if "-s" in args else signal.SIGTERM
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and not (i and args[i - 1] == "-s")]
    failed = False
    for job_id in ids:
        with jobs(write=False) as data:
            job = find(data, job_id)
        if job is None:
            sys.stderr.write(f"qsig: Unknown Job Id {job_id}\n")
            failed = True
        elif job["state"] != "running":
            sys.stderr.write(f"qsig: Request invalid for state of job {job_id}\n")
            failed = True
        else:
            signal_job(job, sig)
    sys.exit(1 if failed else 0)


def qselect(args: list[str]) -> None:
    with jobs(write=False) as data:
        for job_id, job in data["jobs"].items():
            if job["state"] != "finished":
                print(job_id)


# -- LSF ------------------------------------------------------------------------------------------------
def bsub(args: list[str]) -> None:
    text = sys.stdin.read()
    words = directives(text, "#BSUB") + args
    opts: dict[str, str] = {}
    for i, word in enumerate(words):
        if word.startswith("-") and i + 1 < len(words):
            opts[word] = words[i + 1] if word != "-R" else opts.get("-R", "") + " " + words[i + 1]
    queue = opts.get("-q", DEFAULT_QUEUE)
    if queue not in QUEUES:
        fail(f"{queue}: No such queue. Job not submitted.", 255)
    slots = int(opts.get("-n", "1"))
    ptile = int(m.group(1)) if (m := re.search(r"span\[ptile=([0-9]+)\]", opts.get("-R", ""))) else slots
    walltime = (
        int(opts["-W"].split(":")[-1]) * 60 + (int(opts["-W"].split(":")[0]) * 3600 if ":" in opts["-W"] else 0)
        if "-W" in opts
        else QUEUES[queue].get("default_walltime", 3600)
    )
    if walltime > QUEUES[queue].get("max_walltime", 10**9):
        fail("Run limit exceeds the queue's limit. Job not submitted.", 255)
    warn = (
        [int(signal.Signals["SIG" + opts["-wa"].removeprefix("SIG")]), int(opts.get("-wt", "1")) * 60]
        if "-wa" in opts
        else None
    )
    submit(
        text,
        name=opts.get("-J", "NONAME"),
        queue=queue,
        explicit_queue="-q" in opts,
        nodes=max(1, slots // max(1, ptile)),
        cpus=ptile,
        walltime=walltime,
        output=opts.get("-o"),
        project=opts.get("-P"),
        warn=warn,
    )


LSF_STATE = {"queued": "PEND", "running": "RUN"}


def lsf_record(job: dict, fields: list[str], hms_times: bool) -> dict:
    stat = LSF_STATE.get(job["state"]) or ("DONE" if job.get("code") == 0 else "EXIT")
    code = job.get("code")
    exit_code = "" if code in (None, 0) else str(128 - code if code < 0 else code)
    limit = hms(job["walltime"]) if hms_times else f"{job['walltime'] / 60:.1f}/{HOST}"
    values = {
        "JOBID": job["id"],
        "JOB_NAME": job["name"],
        "STAT": stat,
        "USER": job["user"],
        "QUEUE": job["queue"],
        "PROJ_NAME": job.get("project") or "default",
        "EXEC_HOST": ":".join(f"{job['cpus']}*{host}" for host in node_names(job["nodes"])) if job.get("stime") else "",
        "PEND_REASON": "New job is waiting for scheduling;" if stat == "PEND" else "",
        "EXIT_CODE": exit_code,
        "RUNTIMELIMIT": limit,
        "SUBMIT_TIME": time.strftime("%b %d %H:%M", time.localtime(job["qtime"])),
    }
    return {f.upper(): values.get(f.upper(), "") for f in fields}


def bjobs(args: list[str]) -> None:
    fields = args[args.index("-o") + 1].split() if "-o" in args else ["jobid", "stat", "queue", "exec_host"]
    skip = {args.index("-o") + 1} if "-o" in args else set()
    if "-u" in args:
        skip.add(args.index("-u") + 1)
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and i not in skip]
    user = args[args.index("-u") + 1] if "-u" in args else None
    with jobs(write=False) as data:
        known = data["jobs"]
    records, missing = [], []
    for job_id in ids or list(known):
        job = known.get(job_id)
        if job is None or (user and user not in ("all", job["user"])):
            missing.append(job_id)
        elif ids or "-a" in args or job["state"] != "finished":
            records.append(lsf_record(job, fields, "-hms" in args))
    if "-json" in args:
        records += [{"JOBID": j, "ERROR": f"Job <{j}> is not found"} for j in missing]
        print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))
        return
    for j in missing:
        sys.stderr.write(f"Job <{j}> is not found\n")
    if not records and not missing:
        sys.stderr.write("No unfinished job found\n")
    if "-noheader" not in args and records:
        print(" ".join(f.upper() for f in fields))
    for record in records:
        print(" ".join(record.values()))
    sys.exit(255 if missing and not records else 0)


def bkill(args: list[str]) -> None:
    sig = args[args.index("-s") + 1].removeprefix("SIG") if "-s" in args else None
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and not (i and args[i - 1] == "-s")]
    failed = False
    for job_id in ids:
        with jobs() as data:
            job = data["jobs"].get(job_id)
            if job is None:
                print(f"Job <{job_id}>: No matching job found", file=sys.stderr)
                failed = True
                continue
            if job["state"] == "finished":
                print(f"Job <{job_id}>: Job has already finished", file=sys.stderr)
                failed = True
                continue
            if job["state"] == "queued":
                job.update(state="finished", etime=time.time(), code=-signal.SIGKILL)
                print(f"Job <{job_id}> is being terminated")
                continue
        if sig:
            signal_job(job, int(signal.Signals["SIG" + sig]))
            print(f"Job <{job_id}> is being signaled")
        else:
            detached("_kill", job_id, "INT", "TERM", "KILL")
            print(f"Job <{job_id}> is being terminated")
    sys.exit(255 if failed else 0)


def bqueues(args: list[str]) -> None:
    names = [a for a in args if not a.startswith("-")] or list(QUEUES)
    for name in names:
        if name not in QUEUES:
            fail(f"{name}: No such queue", 255)
    print("QUEUE_NAME      PRIO STATUS          MAX JL/U JL/P JL/H NJOBS  PEND   RUN  SUSP")
    for name in names:
        print(f"{name:<15} 30  Open:Active       -    -    -    -     0     0     0     0")


def launch_here(args: list[str]) -> None:
    """pbsdsh -h HOST -- CMD / blaunch HOST CMD: every host of the stand-in's allocation is this one."""
    if SYSTEM == "pbs":
        host = args[args.index("-h") + 1] if "-h" in args else HOST
        args = args[args.index("--") + 1 :] if "--" in args else args[2:]
    else:
        host, args = args[0], args[1:]
    with open(STATE / "launches", "a") as log:  # which host each launch was for, for the tests
        log.write(f"{host} {os.environ.get('PBS_JOBID') or os.environ.get('LSB_JOBID', '')}\n")
    os.execvp(args[0], args)


def main() -> None:
    command, args = sys.argv[2], sys.argv[3:]
    if command == "_run":
        run_job(args[0])
    elif command == "_kill":
        kill_sequence(args[0], [signal.Signals["SIG" + name] for name in args[1:]])
    else:
        table = {
            "qsub": qsub,
            "qstat": qstat,
            "qdel": qdel,
            "qsig": qsig,
            "qselect": qselect,
            "pbsdsh": launch_here,
            "bsub": bsub,
            "bjobs": bjobs,
            "bkill": bkill,
            "bqueues": bqueues,
            "blaunch": launch_here,
        }
        table[command](args)


if __name__ == "__main__":
    main()
