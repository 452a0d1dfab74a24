"""What the laptop and the job agree on, in one place: the job's environment, the files of a session
directory, why a session ended and the launcher's exit code for it, the version of the documents the
job writes (state.json, connection.json, usage.json) and the oldest jupyter_server that may serve a session.

Shipped with every job (standard library only, no imports, Python 3.9): the job's modules import it from
beside themselves (`from contract import ...`), the laptop through `hpcjup.job` (or as
`hpcjup.job.contract`). No other file spells these values: tests/job/test_contract.py reads the sources.
"""

#: The schema of every document the job writes and hpcjup reads back.
SCHEMA = 1
#: jupyter_server 2.20 fixed a token-stealing XSS and reports the real port for port=0.
MIN_SERVER = (2, 20)

# -- the session directory's files ---------------------------------------------------------------
JOB_SCRIPT = "job.sh"  # the rendered batch script
JOB_LOG = "job.out"  # the job's stdout and stderr
CONNECTION_FILE = "connection.json"  # where the session answers, and its token
STATE_FILE = "state.json"  # what the launcher is doing, and why it ended
USAGE_FILE = "usage.json"  # what the session used, for `hpcjup stats` (usage.py)
TOKEN_FILE = "token"  # Jupyter's token, read by Jupyter (JUPYTER_TOKEN_FILE)
RUNTIME_DIR = "runtime"
SETUP_FILE = "setup.sh"  # the environment's setup lines, sourced by the job and by worker jobs
DASK_DIR = "dask"
JOBS_FILE = "jobs"  # in DASK_DIR: the ids of the jobs the notebook submitted, one a line (the submit wrapper)
GROUPS_FILE = "groups.json"  # the worker groups (the laptop writes it; the adaptive loop reads it)
ADAPTIVE_STATUS = "adaptive.json"  # in DASK_DIR: what the adaptive loop last saw of each group (for `ls`)
ADAPTIVE_DIR = "group-jobs"  # in DASK_DIR: the loop's per-submission scripts and the jobs' start/withdraw markers
ADAPTIVE_TOKEN = "@TOKEN@"  # in an adaptive group's job script: the loop puts each submission's own token there

# -- why a session ended, as the launcher records it in state.json --------------------------------
REASON_STOPPED = "stopped"
REASON_WALLTIME = "walltime"
REASON_IDLE = "idle"
REASON_SHUTDOWN = "shutdown"  # File > Shut Down in JupyterLab
REASON_JUPYTER_EXITED = "jupyter-exited"
REASON_NO_JUPYTER = "no-jupyter"
REASON_JUPYTER_TOO_OLD = "jupyter-too-old"
REASON_NO_IPYKERNEL = "no-ipykernel"  # a --kernel Python without ipykernel (or none at that path)
REASON_AUTH_CONFIG = "auth-config"  # a Jupyter config file disables or replaces the token
REASON_NO_DASK = "no-dask"  # Dask was asked for and the job's Python has no `distributed`
REASON_READY_TIMEOUT = "ready-timeout"
REASON_DASK_FAILED = "dask-failed"

#: Reasons for a session that ended the way it should (not a failure).
NORMAL_ENDS = frozenset({REASON_STOPPED, REASON_WALLTIME, REASON_IDLE, REASON_SHUTDOWN})
#: The launcher's exit code for each reason (1: an unexpected error, or a reason not listed).
EXIT_CODES = {
    **{reason: 0 for reason in NORMAL_ENDS},
    REASON_NO_JUPYTER: 2,
    REASON_JUPYTER_TOO_OLD: 2,
    REASON_AUTH_CONFIG: 2,
    REASON_NO_DASK: 2,
    REASON_NO_IPYKERNEL: 2,
    REASON_READY_TIMEOUT: 3,
    REASON_DASK_FAILED: 4,
}

# -- the job's environment: the only way the launcher learns about its batch system ---------------
# Every adapter's rendered script exports these (schedulers/<name>.py, `job_environment`); the
# launcher and dasklaunch.py read nothing else (never a batch system's own variables). The job's
# names carry JOB_ where a user setting of the same name exists (HPCJUP_PARTITION is a setting).
ENV_SCHEDULER = "HPCJUP_JOB_SCHEDULER"  # the adapter's name: slurm, pbs, lsf, sge, none, local
ENV_JOB_ID = "HPCJUP_JOB_ID"
ENV_NODE = "HPCJUP_NODE"  # this node's short host name
ENV_NODELIST = "HPCJUP_NODELIST"  # the allocation's hosts, space-separated, each once, this node first
ENV_CPUS = "HPCJUP_CPUS"  # CPUs the job may use on each node
ENV_MEMORY_KB = "HPCJUP_JOB_MEMORY_KB"  # KB of memory the scheduler gave the job on each node ("": not said)
# Shell words that run one command on a host of the allocation: `{host}` and `{cpus}` are filled in,
# the command's argv follows (each adapter's own: see schedulers/NAME.py `environment`).
# Empty: the allocation is this host only; the command runs here.
ENV_LAUNCH = "HPCJUP_LAUNCH"
ENV_TIME_LIMIT = "HPCJUP_TIME_LIMIT"  # seconds granted (0: unknown, or none)
ENV_WARN_SIGNAL = "HPCJUP_WARN_SIGNAL"  # "1": the scheduler sends SIGUSR1 before the limit; else the launcher's timer
ENV_WARN_SECONDS = "HPCJUP_WARN_SECONDS"  # how long before the limit the session shuts down
# How often this job ran before (requeued after a preemption: start --preemptible); unset where the scheduler does
# not say (the launcher then counts from the state.json of the run before)
ENV_RESTARTS = "HPCJUP_RESTARTS"
ENV_PARTITION = "HPCJUP_JOB_PARTITION"  # the queue/partition the job runs in (the notebook's jobqueue default)
ENV_ACCOUNT = "HPCJUP_JOB_ACCOUNT"  # the account/project it is charged to
ENV_JOBQUEUE = "HPCJUP_JOBQUEUE"  # dask-jobqueue's name for this scheduler (slurm, pbs, lsf, sge); empty: none
ENV_SUBMIT = "HPCJUP_SUBMIT"  # the submit command the notebook's jobqueue runs (wrapped to record job ids)
ENV_SCRUB = "HPCJUP_SCRUB"  # a variable prefix to drop before submitting from inside the job (the scheduler's)
ENV_SCRUB_KEEP = "HPCJUP_SCRUB_KEEP"  # space-separated names under that prefix to keep (its config file's)
# Not an adapter's to export: the job script's exec line sets it when the job runs its environments from node-local
# copies (envlocal.sh): the command that puts a host's copy in front of the per-host launch of Dask's workers.
WRAP_VARIABLE = "HPCJUP_ENV_WRAP"
# Warnings of envlocal.sh (an image not used, and why), one a line, in the session directory: the laptop shows them.
ENVLOCAL_WARNINGS = "envlocal.txt"
# Not an adapter's to export either: set by relay.sh (the job's main process on the host) for a launcher inside a
# container image, the FIFO through which that launcher has the host run the per-host launches of Dask's workers.
RELAY_VARIABLE = "HPCJUP_RELAY"
RELAY_FILE = "relay.sh"  # beside the launcher, in the session directory; its channel is in relay/ there
