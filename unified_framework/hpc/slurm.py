"""Thin, parse-everything layer over the SLURM commands.

Every SLURM call goes through :func:`run_command`, which turns failures into clear
exceptions: :class:`SlurmUnavailable` when the controller or accounting daemon cannot
be reached (after a few quick retries, so a controller that is restarting is not
mistaken for dead jobs), :class:`SlurmRejected` (an :class:`InputError`) when SLURM
refuses what the user asked for, and :class:`SlurmError` otherwise. Queries read fixed
``--format`` output in one call each and return dataclasses; nothing is cached.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from ..errors import BackendUnavailable, InputError, MDLMAError

logger = logging.getLogger(__name__)

#: Field separator for --format output: a control character no job name may contain.
SEP = "\x1f"
_TRANSIENT = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|Connection timed out|"
    r"Zero Bytes were transmitted|Transport endpoint is not connected|Resource temporarily unavailable|"
    r"slurm_persist_conn_open|Problem talking to the database|Unable to establish|"
    r"Communication connection failure|Slurm backup controller in standby mode|Insane message length",
    re.IGNORECASE,
)
# Environment variables that change what the commands print.
_FORMAT_VARIABLES = (
    "SQUEUE_FORMAT",
    "SQUEUE_FORMAT2",
    "SQUEUE_SORT",
    "SQUEUE_ARRAY",
    "SQUEUE_STATES",
    "SQUEUE_USERS",
    "SACCT_FORMAT",
    "SINFO_FORMAT",
    "SINFO_SORT",
    "SLURM_TIME_FORMAT",
    "SACCT_FEDERATION",
)
_NO_VALUE = {"", "N/A", "None", "(null)", "Unknown", "n/a", "None assigned"}


class SlurmError(MDLMAError, RuntimeError):
    """A SLURM command failed."""


class SlurmUnavailable(SlurmError):
    """The controller (or slurmdbd) did not answer; states are unknown, not failed."""


class SlurmRejected(SlurmError, InputError):
    """SLURM refused the request (bad partition, time limit, job id, ...)."""


def slurm_available() -> bool:
    """True if the SLURM client commands are installed here."""
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FORMAT_VARIABLES}
    env["SLURM_TIME_FORMAT"] = "standard"
    return env


def _clean_message(command: str, stderr: str, stdout: str = "") -> str:
    lines = []
    for line in (stderr or stdout).splitlines():
        line = re.sub(rf"^({re.escape(command)}|slurm_\w+|\w+): (error|fatal): ", "", line.strip())
        line = re.sub(rf"^{re.escape(command)}: ", "", line)
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or "failed without a message"


def run_command(
    args: Sequence[str],
    *,
    retries: int = 3,
    delay: float = 0.5,
    timeout: float = 120,
    rejects_are_input_errors: bool = False,
    errors_in_stderr: bool = False,
) -> str:
    """Run a SLURM command and return its standard output.

    Parameters
    ----------
    args : sequence of str
        The command line (no shell is involved).
    retries : int
        Extra attempts after a transient failure (controller unreachable, timeouts);
        the pause doubles from ``delay`` seconds.
    timeout : float
        Seconds before the command is killed (counts as transient).
    rejects_are_input_errors : bool
        Raise :class:`SlurmRejected` for other failures (the user's request was refused).
    errors_in_stderr : bool
        Treat ``error:`` lines on standard error as failure even with exit status 0
        (``scancel`` reports unknown job ids that way).

    Raises
    ------
    BackendUnavailable
        The command is not installed.
    SlurmUnavailable
        Still unreachable after the retries.
    SlurmError, SlurmRejected
        Any other failure, with SLURM's message on one line.
    """
    command = os.path.basename(args[0])
    if shutil.which(args[0]) is None:
        raise BackendUnavailable(f"{command}: SLURM is not installed here (no {command} on PATH)")
    for attempt in range(retries + 1):
        try:
            proc = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=_environment(),
            )
        except subprocess.TimeoutExpired:
            message = f"no answer within {timeout:g} s"
            transient = True
        else:
            failed_quietly = errors_in_stderr and ": error: " in (proc.stderr or "")
            if proc.returncode == 0 and not failed_quietly:
                return proc.stdout
            if failed_quietly:
                proc.stderr = "\n".join(
                    line for line in proc.stderr.splitlines() if ": error: " in line
                )
            message = _clean_message(command, proc.stderr, proc.stdout)
            transient = bool(_TRANSIENT.search(proc.stderr or ""))
        if not transient:
            error = SlurmRejected if rejects_are_input_errors else SlurmError
            raise error(f"{command}: {message}")
        if attempt < retries:
            logger.info(
                "%s: transient failure (%s); retry %d of %d", command, message, attempt + 1, retries
            )
            time.sleep(delay * 2**attempt)
    raise SlurmUnavailable(
        f"{command}: SLURM did not answer ({message}); job states are unknown, try again later"
    )


# --------------------------------------------------------------------------- values
def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in _NO_VALUE else text


_DURATION_RE = re.compile(r"(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d*)?)")


def parse_duration(text: str | None) -> float | None:
    """Seconds of a SLURM duration or time limit, the one parser of them all.

    Reads what ``sinfo``, ``squeue``, ``sacct`` print and what ``--time`` takes:
    ``[D-]HH:MM:SS[.mmm]``, ``MM:SS[.mmm]``, ``MM`` (a bare number is minutes),
    ``D-HH`` and ``D-HH:MM``.

    Returns
    -------
    float or None
        Seconds; ``inf`` for ``UNLIMITED``/``INFINITE``; ``None`` for empty or ``N/A``.

    Raises
    ------
    InputError
        Text that is none of these forms.

    Examples
    --------
    >>> parse_duration("1-12"), parse_duration("10:30"), parse_duration("30")
    (129600.0, 630.0, 1800.0)
    >>> parse_duration("infinite")
    inf
    """
    value = _value(text or "")
    if value is None:
        return None
    if value.upper() in {"UNLIMITED", "INFINITE"}:
        return float("inf")
    match = _DURATION_RE.fullmatch(value)
    if not match:
        raise InputError(
            f"SLURM time limit: expected [D-]HH:MM:SS, MM:SS, MINUTES or UNLIMITED, got {value[:40]!r}"
        )
    days, clock = match.groups()
    parts = [float(part) for part in clock.split(":")]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0.0] * (3 - len(parts))
    elif len(parts) == 1:  # MM
        parts = [0.0, parts[0], 0.0]
    elif len(parts) == 2:  # MM:SS
        parts = [0.0, *parts]
    hours, minutes, seconds = parts
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def format_minutes(minutes: int) -> str:
    """A SLURM ``--time`` value (``D-HH:MM:00``) for a whole number of minutes.

    Examples
    --------
    >>> format_minutes(90), format_minutes(2880)
    ('0-01:30:00', '2-00:00:00')
    """
    if minutes <= 0:
        raise InputError(f"runtime: expected a positive number of minutes, got {minutes}")
    days, rest = divmod(minutes, 1440)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


_MEMORY_UNITS = {
    "": 1 / 1024**2,
    "K": 1 / 1024,
    "M": 1.0,
    "G": 1024.0,
    "T": 1024.0**2,
    "P": 1024.0**3,
}


def parse_memory_mb(text: str | None) -> float | None:
    """Mebibytes of a SLURM memory value (``3120K``, ``512M``, ``4G``, ``4000``= MB)."""
    value = _value(text or "")
    if value is None:
        return None
    match = re.fullmatch(r"([0-9.]+)([KMGTP]?)[nc]?", value)
    if not match:
        return None
    number, unit = match.groups()
    if unit == "" and "." not in number:
        return float(number)  # bare numbers in sinfo/squeue are MB
    return float(number) * _MEMORY_UNITS[unit]


def _tres_value(tres: str, key: str) -> str | None:
    for item in (tres or "").split(","):
        name, _, value = item.partition("=")
        if name == key:
            return value
    return None


def count_gpus(gres: str | None) -> int:
    """Number of GPUs in a GRES string, the one counter of them all.

    Reads ``sinfo``'s ``%G`` (configured) and ``GresUsed`` (allocated) fields: entries
    separated by commas (not those inside parentheses), each ``name[:type][:count]``
    with an optional ``(S:0-1)``/``(IDX:0-3)`` suffix. Only ``gpu`` entries count; one
    without a count is one GPU; ``(null)`` and empty text are none.

    Examples
    --------
    >>> count_gpus("gpu"), count_gpus("gpu:2"), count_gpus("gpu:a100:4(S:0-1)")
    (1, 2, 4)
    >>> count_gpus("gpu:a100:2(IDX:0,2),gpu:v100:1,shard:8"), count_gpus("(null)")
    (3, 0)
    """
    total = 0
    for item in re.split(r",(?![^(]*\))", gres or ""):
        item = re.sub(r"\(.*?\)", "", item).strip()
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


# --------------------------------------------------------------------------- squeue
@dataclass
class JobStatus:
    """One line of ``squeue``: a job (or one task of an array) the controller knows."""

    job_id: str
    array_job_id: str
    array_task_id: str | None
    name: str
    user: str
    state: str
    reason: str | None
    partition: str
    elapsed: str
    time_limit: str
    submit_time: str | None
    start_time: str | None
    nodes: str | None
    cpus: int
    workdir: str

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


#: States after which a job does no more work.
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
_SQUEUE_FIELDS = (
    "%i",
    "%F",
    "%K",
    "%u",
    "%T",
    "%r",
    "%P",
    "%M",
    "%l",
    "%V",
    "%S",
    "%N",
    "%C",
    "%j",
    "%Z",
)


def squeue_command(user: str | None = None, states: str = "all") -> list[str]:
    """The single ``squeue`` call behind :func:`squeue`."""
    command = [
        "squeue",
        "--noheader",
        "--array",
        f"--states={states}",
        "--format=" + SEP.join(_SQUEUE_FIELDS),
    ]
    if user:
        command.append(f"--user={user}")
    return command


def parse_squeue(text: str) -> list[JobStatus]:
    """Parse the output of :func:`squeue_command`."""
    jobs = []
    n = len(_SQUEUE_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        f = line.split(SEP)
        if len(f) < n:
            logger.warning("squeue: skipping a line with %d of %d fields", len(f), n)
            continue
        name = SEP.join(f[13 : len(f) - 1])  # a name containing the separator stays whole
        jobs.append(
            JobStatus(
                job_id=f[0],
                array_job_id=f[1],
                array_task_id=_value(f[2]),
                name=name,
                user=f[3],
                state=f[4],
                reason=_value(f[5]),
                partition=f[6],
                elapsed=f[7],
                time_limit=f[8],
                submit_time=_value(f[9]),
                start_time=_value(f[10]),
                nodes=_value(f[11]),
                cpus=int(f[12]) if f[12].isdigit() else 0,
                workdir=f[-1],
            )
        )
    return jobs


def squeue(user: str | None = None) -> list[JobStatus]:
    """Jobs the controller knows (pending, running and recently finished) in one call."""
    return parse_squeue(run_command(squeue_command(user)))


# --------------------------------------------------------------------------- sacct
@dataclass
class JobAccounting:
    """A job's accounting record from ``sacct``, with its steps folded in."""

    job_id: str
    name: str
    user: str
    partition: str
    state: str
    exit_code: int | None
    signal: int | None
    elapsed_s: float
    time_limit: str | None
    cpus: int
    total_cpu_s: float | None
    req_mem_mb: float | None
    max_rss_mb: float | None
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    nodes: str | None
    workdir: str | None
    steps: list[str] = field(default_factory=list)

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU time used / (elapsed x allocated CPUs), 0..1; None before the job ran."""
        if self.total_cpu_s is None or self.elapsed_s <= 0 or self.cpus <= 0:
            return None
        # sacct's Elapsed is whole seconds and TotalCPU is not: a busy job of 2.4 s reads 2 s.
        return min(1.0, self.total_cpu_s / (self.elapsed_s * self.cpus))

    @property
    def memory_efficiency(self) -> float | None:
        """Peak resident memory / requested memory, 0..1; None if either is unknown."""
        if self.max_rss_mb is None or not self.req_mem_mb:
            return None
        return self.max_rss_mb / self.req_mem_mb

    def as_dict(self) -> dict:
        """Fields plus the two efficiencies (for tables and JSON)."""
        return {
            **asdict(self),
            "cpu_efficiency": self.cpu_efficiency,
            "memory_efficiency": self.memory_efficiency,
        }


_SACCT_FIELDS = (
    "JobID",
    "JobIDRaw",
    "User",
    "Partition",
    "State",
    "ExitCode",
    "ElapsedRaw",
    "TotalCPU",
    "AllocCPUS",
    "ReqTRES",
    "MaxRSS",
    "Submit",
    "Start",
    "End",
    "Timelimit",
    "NodeList",
    "JobName",
    "WorkDir",
)


def sacct_command(
    job_ids: Iterable[str] | None = None,
    user: str | None = None,
    since: str | None = None,
    allocations_only: bool = False,
) -> list[str]:
    """A ``sacct`` call of :func:`sacct` (``allocations_only``: without step lines, ``-X``)."""
    command = [
        "sacct",
        "--noheader",
        "--parsable2",
        f"--delimiter={SEP}",
        "--format=" + ",".join(_SACCT_FIELDS),
    ]
    if allocations_only:
        command.append("--allocations")
    ids = [str(j) for j in job_ids or ()]
    if ids:
        command.append("--jobs=" + ",".join(ids))
    if user:
        command.append(f"--user={user}")
    else:
        command.append("--allusers")
    if since and not ids:
        command.append(f"--starttime={since}")
    return command


def parse_sacct(text: str) -> list[JobAccounting]:
    """Parse :func:`sacct_command` output; step lines (``123.batch``) fold into their job."""
    jobs: dict[str, JobAccounting] = {}
    n = len(_SACCT_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        f = line.split(SEP)
        if len(f) < n:
            continue
        job_id, _, step = f[0].partition(".")
        if step:
            job = jobs.get(job_id)
            if job is None:
                continue
            job.steps.append(step)
            rss = parse_memory_mb(f[10])
            if rss is not None:
                job.max_rss_mb = max(job.max_rss_mb or 0.0, rss)
            continue
        exit_code, _, signal = f[5].partition(":")
        jobs[job_id] = JobAccounting(
            job_id=job_id,
            name=SEP.join(f[16 : len(f) - 1]),
            user=f[2],
            partition=f[3],
            state=f[4].split()[0] if f[4] else "UNKNOWN",
            exit_code=int(exit_code) if exit_code.isdigit() else None,
            signal=int(signal) if signal.isdigit() else None,
            elapsed_s=float(f[6] or 0),
            time_limit=_value(f[14]),
            cpus=int(f[8]) if f[8].isdigit() else 0,
            total_cpu_s=parse_duration(f[7]),
            req_mem_mb=parse_memory_mb(_tres_value(f[9], "mem")),
            max_rss_mb=parse_memory_mb(f[10]),
            submit_time=_value(f[11]),
            start_time=_value(f[12]),
            end_time=_value(f[13]),
            nodes=_value(f[15]),
            workdir=_value(f[-1]),
        )
    return list(jobs.values())


def sacct_workdirs(user: str | None, since: str) -> list[str]:
    """Working directories of the jobs started since ``since``, each once, in sacct's order.

    One ``sacct -X`` call for the one field: a user's months of (array) jobs can be tens of
    thousands of records, which :func:`sacct` would parse whole and complete step by step.
    """
    command = [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        "--format=WorkDir",
        f"--starttime={since}",
        f"--user={user}" if user else "--allusers",
    ]
    folders = (line.strip() for line in run_command(command).splitlines())
    return list(dict.fromkeys(folder for folder in folders if folder))


def sacct(
    job_ids: Iterable[str] | None = None, user: str | None = None, since: str | None = None
) -> list[JobAccounting]:
    """Accounting records of jobs (finished, running and pending).

    Two calls at most: the allocations (``sacct -X``), then the steps (CPU time, peak
    memory) of only those jobs that started — slurmdbd looks steps up job by job, so
    asking for them for thousands of jobs that never ran would cost seconds.
    """
    records = parse_sacct(run_command(sacct_command(job_ids, user, since, allocations_only=True)))
    started = [r.job_id for r in records if r.nodes]  # jobs cancelled while pending have none
    if not started:
        return records
    detailed = {r.job_id: r for r in parse_sacct(run_command(sacct_command(started, user)))}
    return [detailed.get(r.job_id, r) for r in records]


# --------------------------------------------------------------------------- sinfo
@dataclass
class Node:
    """A compute node as ``sinfo`` reports it."""

    name: str
    partitions: list[str]
    state: str
    cpus: int
    cpus_allocated: int
    cpus_idle: int
    memory_mb: float
    free_memory_mb: float | None
    gpus: int
    gres: str | None
    features: str | None


@dataclass
class Partition:
    """A partition with its limits and the resources of its nodes: the one description
    of a partition, read by :func:`sinfo` (job validation, the dashboard's resource
    page and the hub's options form all use it).

    ``cpus``, ``cpus_idle`` and ``gpus`` are totals over the nodes; a single job gets at
    most the ``max_*_per_node`` figures (the jobs here run on one node).
    """

    name: str
    default: bool
    available: bool
    max_time: str
    default_time: str | None
    nodes: list[str]
    cpus: int
    cpus_idle: int
    max_cpus_per_node: int
    max_memory_mb_per_node: float
    gpus: int
    max_gpus_per_node: int

    @property
    def max_time_s(self) -> float:
        """The time limit in seconds (``inf`` for none)."""
        return parse_duration(self.max_time) or float("inf")

    @property
    def max_minutes(self) -> int | None:
        """The time limit in whole minutes (a part minute counts); ``None`` for none."""
        seconds = self.max_time_s
        return None if math.isinf(seconds) else math.ceil(seconds / 60)


_NODE_FIELDS = ("%N", "%P", "%T", "%c", "%C", "%m", "%e", "%G", "%f")
_PARTITION_FIELDS = ("%P", "%a", "%l", "%L")


def sinfo() -> tuple[list[Partition], list[Node]]:
    """Partitions and nodes (two ``sinfo`` calls)."""
    node_text = run_command(
        ["sinfo", "--noheader", "--all", "--Node", "--format=" + SEP.join(_NODE_FIELDS)]
    )
    part_text = run_command(
        ["sinfo", "--noheader", "--all", "--format=" + SEP.join(_PARTITION_FIELDS)]
    )
    return parse_sinfo(part_text, node_text)


def parse_sinfo(partition_text: str, node_text: str) -> tuple[list[Partition], list[Node]]:
    """Parse the two ``sinfo`` outputs of :func:`sinfo`."""
    nodes: dict[str, Node] = {}
    for line in node_text.splitlines():
        f = line.split(SEP)
        if len(f) != len(_NODE_FIELDS):
            if line.strip():
                logger.warning(
                    "sinfo: skipping a node line with %d of %d fields", len(f), len(_NODE_FIELDS)
                )
            continue
        name, partition = f[0], f[1].rstrip("*")
        if name in nodes:
            nodes[name].partitions.append(partition)
            continue
        allocated, idle, _other, total = (
            int(x) if x.isdigit() else 0 for x in (f[4].split("/") + ["0"] * 4)[:4]
        )
        nodes[name] = Node(
            name=name,
            partitions=[partition],
            state=f[2],
            cpus=int(f[3]) if f[3].isdigit() else total,
            cpus_allocated=allocated,
            cpus_idle=idle,
            memory_mb=parse_memory_mb(f[5].rstrip("+")) or 0.0,
            free_memory_mb=parse_memory_mb(f[6]),
            gpus=count_gpus(f[7]),
            gres=_value(f[7]),
            features=_value(f[8]),
        )
    partitions = []
    for line in partition_text.splitlines():
        f = line.split(SEP)
        if len(f) != len(_PARTITION_FIELDS):
            if line.strip():
                logger.warning(
                    "sinfo: skipping a partition line with %d of %d fields",
                    len(f),
                    len(_PARTITION_FIELDS),
                )
            continue
        name = f[0].rstrip("*")
        members = [n for n in nodes.values() if name in n.partitions]
        partitions.append(
            Partition(
                name=name,
                default=f[0].endswith("*"),
                available=f[1] == "up",
                max_time=f[2],
                default_time=_value(f[3]),
                nodes=[n.name for n in members],
                cpus=sum(n.cpus for n in members),
                cpus_idle=sum(n.cpus_idle for n in members),
                max_cpus_per_node=max((n.cpus for n in members), default=0),
                max_memory_mb_per_node=max((n.memory_mb for n in members), default=0.0),
                gpus=sum(n.gpus for n in members),
                max_gpus_per_node=max((n.gpus for n in members), default=0),
            )
        )
    return partitions, list(nodes.values())


def gpus_in_use() -> dict[str, int]:
    """GPUs allocated per node, read with ``sinfo -O GresUsed`` (:class:`Node` has the totals)."""
    text = run_command(
        ["sinfo", "--noheader", "--all", "--Node", f"--Format=NodeList:{SEP},GresUsed:{SEP}"]
    )
    return parse_gres_used(text)


def parse_gres_used(text: str) -> dict[str, int]:
    """Parse :func:`gpus_in_use`'s ``sinfo`` output: node -> GPUs allocated.

    A node listed once per partition counts once (the largest figure).

    Examples
    --------
    >>> parse_gres_used(f"g1{SEP}gpu:a100:2(IDX:0-1){SEP}\\ng2{SEP}gpu:0{SEP}\\n")
    {'g1': 2, 'g2': 0}
    """
    used: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(SEP)
        name = fields[0].strip()
        if len(fields) >= 2 and name:
            used[name] = max(used.get(name, 0), count_gpus(fields[1].strip()))
    return used


def qos_names() -> list[str] | None:
    """QoS names known to the accounting database, or None if it cannot be asked."""
    try:
        text = run_command(
            ["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=name"], retries=1
        )
    except (SlurmError, BackendUnavailable) as exc:
        logger.info("QoS list unavailable: %s", exc)
        return None
    return [line.strip() for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- actions
def escape_filename_pattern(path: str, field: str = "path") -> str:
    """Write ``path`` so that SLURM keeps it literal in a filename pattern.

    ``sbatch --output``, ``--error`` and ``--input`` take *filename patterns*: SLURM
    replaces ``%j``, ``%x``, ``%u``, ``%5a``, ... anywhere in them (also in the working
    directory it puts in front of a relative one) and writes ``%`` as ``%%``. A
    backslash instead turns every replacement off and is itself removed (SLURM up to
    25.05 keeps ``\\\\`` as one backslash, 25.11 drops them all), so no version can
    write a log named by job id into a folder whose path holds a backslash: such a
    path is refused. ``--chdir`` is taken literally and needs no escaping.

    Parameters
    ----------
    path : str
        A literal path, e.g. the folder a job's log goes to.
    field : str
        What to name in the error message (``"python-script: workdir"``).

    Returns
    -------
    str
        ``path`` with every ``%`` doubled; append ``/slurm-%j.out`` for the pattern.

    Raises
    ------
    InputError
        ``path`` contains a backslash.

    Examples
    --------
    >>> escape_filename_pattern("/data/100%_j") + "/slurm-%j.out"
    '/data/100%%_j/slurm-%j.out'
    """
    if "\\" in path:
        # Quoted as typed (a repr would double the backslash); control characters escaped.
        shown = (
            (path if len(path) <= 80 else path[:77] + "...")
            if path.isprintable()
            else ascii(path)[1:-1]
        )
        raise InputError(
            f"{field}: '{shown}' contains a backslash, which SLURM removes from the path of the job's log "
            "(sbatch --output); rename the folder or use the local backend"
        )
    return path.replace("%", "%%")


def sbatch(
    script: str,
    *,
    workdir: str,
    output: str,
    dependency: str | None = None,
    hold: bool = False,
    test_only: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """Submit a batch script file; return its job id (or sbatch's answer for ``test_only``).

    The working directory and output pattern are passed as arguments, never written
    into the script. ``workdir`` is taken literally; ``output`` is a SLURM filename
    pattern: build it from a literal folder with :func:`escape_filename_pattern`.
    """
    command = ["sbatch", f"--chdir={workdir}", f"--output={output}"]
    if dependency:
        command.append(f"--dependency={dependency}")
    if hold:
        command.append("--hold")
    command += list(extra)
    if test_only:
        command.append("--test-only")
        proc_text = _run_test_only(command + [script])
        return proc_text
    command += ["--parsable", script]
    text = run_command(command, retries=2, rejects_are_input_errors=True).strip()
    # --parsable prints "jobid" or "jobid;cluster"
    job_id = text.splitlines()[-1].split(";")[0] if text else ""
    if not job_id.isdigit():
        raise SlurmError(f"sbatch: unexpected answer {text!r}")
    return job_id


def _run_test_only(command: list[str]) -> str:
    # sbatch --test-only answers on stderr even when it succeeds.
    if shutil.which("sbatch") is None:
        raise BackendUnavailable("sbatch: SLURM is not installed here")
    proc = subprocess.run(
        command, capture_output=True, text=True, errors="replace", env=_environment(), timeout=120
    )
    message = _clean_message("sbatch", proc.stderr, proc.stdout)
    if proc.returncode != 0:
        if _TRANSIENT.search(proc.stderr or ""):
            raise SlurmUnavailable(f"sbatch: SLURM did not answer ({message})")
        raise SlurmRejected(f"sbatch --test-only: {message}")
    return message


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel jobs (array tasks as ``123_4``, whole arrays as ``123``)."""
    for job_id in job_ids:
        if not re.fullmatch(r"\d+(_\d+)?", str(job_id)):
            raise InputError(f"job id {job_id!r}: expected digits, or ARRAYID_TASK")
    run_command(
        ["scancel", "--verbose", *map(str, job_ids)],
        rejects_are_input_errors=True,
        errors_in_stderr=True,
    )


def scontrol_release(job_ids: Sequence[str]) -> None:
    """Release held jobs."""
    for job_id in job_ids:
        if not re.fullmatch(r"\d+(_\d+)?", str(job_id)):
            raise InputError(f"job id {job_id!r}: expected digits, or ARRAYID_TASK")
    run_command(["scontrol", "release", ",".join(map(str, job_ids))], rejects_are_input_errors=True)
