"""The POSIX sh pieces scheduler adapters share: queries bounded in time, output framed in sections, and
cancels that check a job's name again right before they cancel it."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

#: Seconds one scheduler query may take before it counts as unanswered. squeue gives up on a stopped
#: controller only after its own retries (about 18 s with Slurm's default MessageTimeout of 10 s, longer
#: where a site raises it); bounded here so that every command answers within 30 s, and above Slurm's
#: own give-up so that, with defaults, the user sees Slurm's words rather than ours.
QUERY_SECONDS = 20
#: sh: `bounded CMD...` runs CMD under coreutils' `timeout` where the host has one (exit 124 when cut off).
BOUNDED = f'bounded() {{ if command -v timeout >/dev/null 2>&1; then timeout {QUERY_SECONDS} "$@"; else "$@"; fi; }}'


def unanswered(words: str, code: int | None, command: str) -> str:
    """Why a scheduler query gave no answer, in the scheduler's own words (its last error line) where it said any."""
    if code == 124:
        return f"{command} did not answer within {QUERY_SECONDS} s"
    lines = [line.strip() for line in words.splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower()] or lines
    return said[-1][:300] if said else f"{command} failed (exit code {code})"


# Reads `ID NAME` lines (the user's active jobs, as an adapter's query lists them) and judges the recorded
# ones (want: "ID PREFIX ID PREFIX ..."; cut: what to strip from both sides' ids before comparing): `ok` when
# the job's name still starts with the prefix hpcjup gave it, `spared` otherwise; each with the recorded id
# and the id the scheduler listed (what the cancel command takes).
_JUDGE = r"""
BEGIN { n = split(want, w, " "); for (i = 1; i < n; i += 2) { k = w[i]; if (cut != "") sub(cut, "", k); rec[k] = w[i]; pre[k] = w[i + 1] } }
{ k = $1; if (cut != "") sub(cut, "", k); if (!(k in rec) || seen[k]++) next
  name = $0; sub(/^[ \t]*[^ \t]+[ \t]/, "", name)
  verdict = index(name, pre[k]) == 1 ? "ok" : "spared"; print verdict, rec[k], $1 }
"""
_PREFIX = re.compile(r"[A-Za-z0-9+_.-]{1,200}")  # a name prefix hpcjup gives: one word, nothing for the shell


def cancel_named(jobs: Mapping[str, str], listing: str, cancel: str, cut: str = "") -> str:
    """sh that cancels a session's recorded jobs only while each still carries the name hpcjup gave it: a
    recorded id is only a claim (the notebook's submit wrapper, or an old one, may have recorded a job the
    user submitted by hand), so the name is checked again in the same command, right before the cancel.

    `jobs`: {recorded id: the prefix its name must start with} (ids checked by the adapter); `listing`: sh
    printing `ID NAME` for the user's own active jobs, at least the recorded ones (one scheduler query, run
    under shell.BOUNDED's `bounded`); `cancel`: the command that takes the listed ids; `cut`: an awk regex
    removed from ids before they are compared (PBS: `[.].*`, the server part; no backslash, which
    awk -v would read as an escape). Prints `hpcjup-cancelled ID` for each
    job cancelled and `hpcjup-spared ID` for a recorded job of the user's that now has another name."""
    wanted = {job_id: prefix for job_id, prefix in jobs.items() if _PREFIX.fullmatch(prefix)}
    if not wanted:
        return ""
    want = shlex.quote(" ".join(f"{job_id} {prefix}" for job_id, prefix in wanted.items()))
    return (
        f"{BOUNDED}\nhpcjup_listed=$({listing})\n"
        f"hpcjup_verdicts=$(printf '%s\\n' \"$hpcjup_listed\" | awk -v want={want} -v cut={shlex.quote(cut)} {shlex.quote(_JUDGE)})\n"
        "hpcjup_ok=$(printf '%s\\n' \"$hpcjup_verdicts\" | awk '$1 == \"ok\" { print $3 }')\n"
        f'if [ -n "$hpcjup_ok" ]; then bounded {cancel} $hpcjup_ok >/dev/null 2>&1; fi\n'
        'printf \'%s\\n\' "$hpcjup_verdicts" | awk \'$1 == "ok" { print "hpcjup-cancelled", $2 } '
        '$1 == "spared" { print "hpcjup-spared", $2 }\''
    )


#: Framed output of a snippet that runs several commands: "@@hpcjup SECTION ARG" starts a section,
#: "@@hpcjup end RC" ends it with the command's exit code (printed after a newline, so it starts a line).
FRAME = "@@hpcjup"


def sections(stdout: str) -> list[tuple[str, str, int | None, str]]:
    """(section, its argument, exit code or None if the section never ended, text) for each framed section."""
    found: list[tuple[str, str, int | None, str]] = []
    current: tuple[str, str] | None = None
    body: list[str] = []
    for line in stdout.splitlines():
        if not line.startswith(FRAME + " "):
            body += [line] if current is not None else []
            continue
        word, _, arg = line[len(FRAME) + 1 :].partition(" ")
        if current is not None:  # "end", or a new section after one cut short (a killed command): keep its text
            code = arg.strip() if word == "end" else ""
            found.append((*current, int(code) if code.isdigit() and len(code) < 4 else None, "\n".join(body)))
        current, body = (None, []) if word == "end" else ((word, arg.strip()), [])
    if current is not None:
        found.append((*current, None, "\n".join(body)))
    return found
