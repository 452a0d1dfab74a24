"""Every built-in site preset parses, names a scheduler hpcjup knows, and renders a job script through its adapter
that the shell and the batch system can read (the site's own documented directives checked where they differ)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from hpcjup.config.resources import Resources
from hpcjup.config.sites import Site, list_sites
from hpcjup.schedulers import REGISTRY, get_scheduler
from hpcjup.schedulers.base import JobSpec

SITES = {site.name: site for site in list_sites(Path("/nonexistent-config-dir"))}
#: The option letters each batch system's directives may use (their qsub/bsub/sbatch manuals).
PREFIXES = {"#PBS": "#PBS -", "#BSUB": "#BSUB -", "#SBATCH": "#SBATCH --"}


def scheduler_name(site: Site) -> str:
    """The preset's scheduler; "auto" (detected on the host) is Slurm for the JSC sites."""
    name = str(site.defaults.get("scheduler", "auto"))
    return "slurm" if name == "auto" else name


def render(site: Site) -> str:
    """The job script the preset's defaults give, with an account where the site needs one."""
    d = site.defaults
    resources = Resources(
        partition=d.get("partition"),
        account="ab12" if site.account_required else None,
        time=d.get("time"),
        nodes=d.get("nodes", 1),
        cpus=d.get("cpus"),
        mem=d.get("mem"),
        gpus=d.get("gpus"),
    )
    adapter = get_scheduler(scheduler_name(site))
    adapter.check_request(resources)
    spec = JobSpec(
        name="lab",
        session_dir="/home/u/.hpcjup/sessions/lab",
        command=["python3", "l.py"],
        resources=resources,
        warn_seconds=300,
    )
    return adapter.render(spec)


def known(name: str) -> str:
    """A preset's name; its scheduler must be registered (an unregistered one fails the test)."""
    return name


def test_the_presets_issue_14_asks_for_are_built_in() -> None:
    assert {"derecho", "casper", "gadi", "minerva", "juwels", "jureca"} <= set(SITES)


@pytest.mark.parametrize("name", [known(name) for name in sorted(SITES)])
def test_preset_names_a_known_scheduler_and_renders_a_valid_script(name: str, tmp_path: Path) -> None:
    site = SITES[name]
    assert site.source.startswith("https://") and site.description and site.hosts
    assert site.defaults.get("host") in site.hosts
    assert site.defaults.get("partition") in site.partitions
    assert scheduler_name(site) in REGISTRY
    script = render(site)
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0  # the shell reads it
    directive = get_scheduler(scheduler_name(site)).directive
    lines = [line for line in script.splitlines() if line.startswith(directive + " ")]
    assert lines, script
    for line in lines:  # each one option (and its value) in words the batch system splits like the shell
        assert line.startswith(PREFIXES[directive]), line
        assert shlex.split(line)[1].startswith("-")
    assert script.rstrip().splitlines()[-1] == "exec python3 l.py"


@pytest.mark.parametrize("name", ["casper", "derecho"])
def test_ncar_presets_render_ncars_documented_directives(name: str) -> None:
    """NCAR's examples: `#PBS -A <project_code>`, `#PBS -l select=1:ncpus=1:mem=10GB`, `#PBS -q casper`."""
    script = render(SITES[name])
    assert "#PBS -A ab12" in script and f"#PBS -q {SITES[name].defaults['partition']}" in script
    assert any(line.startswith("#PBS -l select=1") for line in script.splitlines())


@pytest.mark.parametrize("name", [known("gadi")])
def test_gadi_preset_renders_ncis_dialect(name: str) -> None:
    """NCI's examples: `#PBS -P ab12`, `#PBS -l ncpus=48`, `#PBS -l mem=190GB`, no select= chunks."""
    script = render(SITES[name])
    assert "#PBS -P ab12" in script and "#PBS -l ncpus=1" in script and "#PBS -l mem=4gb" in script
    assert "select=" not in script and "#PBS -A" not in script


def test_minerva_preset_charges_the_project_with_p() -> None:
    """Minerva: "All jobs must specify project using the -P bsub option"."""
    script = render(SITES["minerva"])
    assert "#BSUB -P ab12" in script and "#BSUB -q express" in script and "#BSUB -W 60" in script
