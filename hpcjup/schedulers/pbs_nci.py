"""NCI Gadi's PBS Pro (registered as "pbs-nci", chosen by its site preset, never detected): PBS Pro without
select= chunks, charged with -P. Facts: https://opus.nci.org.au/display/Help/PBS+Directives+Explained."""

from __future__ import annotations

from hpcjup.config.resources import Resources
from hpcjup.errors import UsageError
from hpcjup.schedulers.pbs import PBSPro
from hpcjup.schedulers.pbs_parse import pbs_memory


class NCIGadi(PBSPro):
    """NCI Gadi's PBS Pro: no select= chunks (job-wide ncpus, mem, ngpus; more than one node is whole nodes),
    the project with -P; file systems a job may use with `-l storage=...` (give it with --directive).
    Facts: https://opus.nci.org.au/display/Help/PBS+Directives+Explained (see hpcjup/sites/gadi.toml)."""

    name = "pbs-nci"
    title = "PBS Pro (NCI Gadi)"
    chunks = False
    project_flag = "-P"

    def check_request(self, resources: Resources) -> None:
        super().check_request(resources)
        if resources.nodes > 1 and not resources.cpus:
            raise UsageError(
                f"--nodes {resources.nodes} on Gadi needs --cpus: Gadi takes the job's CPUs in all (ncpus), "
                "whole nodes when more than one.",
                hint="Give the cores of one node, e.g. --cpus 48 in the normal queue (104 in normalsr).",
            )

    def resource_options(self, res: Resources) -> list[tuple[str, str] | None]:
        """Job-wide totals: -l ncpus=, -l mem=, -l ngpus= (Gadi's queues decide the GPU type)."""
        count = res.gpus.rpartition(":")[2] if res.gpus else None
        return [
            ("-l", f"ncpus={res.nodes * res.cpus}") if res.cpus else None,
            ("-l", f"mem={pbs_memory(res.mem, res.nodes)}") if res.mem else None,
            ("-l", f"ngpus={res.nodes * int(count)}") if count else None,
        ]

    def cpus_per_node(self) -> str:
        # Gadi's PBS_NCPUS: the job's CPUs in all, spread evenly over whole nodes.
        return (
            '"$(n=$(awk \'!seen[$0]++\' "$PBS_NODEFILE" 2>/dev/null | wc -l); '
            'echo $(( ${PBS_NCPUS:-${NCPUS:-1}} / (n > 0 ? n : 1) )))"'
        )

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        # PBSJob writes -A and select= chunks; Gadi charges with -P and takes job-wide ncpus/mem.
        options = super().worker_placement(partition, None, walltime, cores=cores, memory=memory)
        options["job_extra_directives"] = [f"-P {account}"] if account else []
        if cores:
            mem = pbs_memory(memory) if memory else ""
            mem = f",mem={mem}" if mem.endswith("b") and mem[:1].isdigit() else ""  # units PBS reads, or none
            options["resource_spec"] = f"ncpus={cores}{mem}"
        return options
