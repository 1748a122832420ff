"""Submit, watch, account and cancel template jobs: the API the CLI and dashboard use.

Every function works against SLURM when its commands are installed, and otherwise
against the embedded local backend (:mod:`.local`), which runs the same rendered
scripts as subprocesses with the same record and log layout and says so in the log
and in ``record.json`` (``"backend": "local"``). The choice is ``slurm.backend`` in the
configuration (``auto`` (default), ``slurm`` or ``local``). Nothing is cached: a
dashboard calls these functions and caches the results itself.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import BackendUnavailable, InputError
from ..shipped import default_prefix
from ..utils.atomic import write_text_atomic
from . import local, slurm
from .records import RECORDS_FOLDER, JobEntry, JobRecord, load_record, new_record_dir
from .render import RenderedJob, render
from .settings import HpcSettings
from .slurm import JobAccounting, JobStatus, Node, Partition
from .templates import Template, load_template, templates_dir
from .validation import ClusterLimits, validate_params

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "slurm", "local")
_ARRAY_DIRECTIVE = re.compile(r"^#SBATCH --array=(\S+)$", re.MULTILINE)


def current_user() -> str:
    """Login name of the effective user (what ``squeue --user`` filters on)."""
    return pwd.getpwuid(os.geteuid()).pw_name


#: What every public function takes as ``config=`` (see :mod:`.settings`).
Settings = HpcSettings | Mapping[str, Any] | None


def backend_name(backend: str | None = None, config: Settings = None) -> str:
    """``slurm`` or ``local``: the backend to use.

    ``backend`` (or ``slurm.backend`` in the configuration) ``auto`` picks SLURM when
    ``sbatch`` is installed. Asking for ``slurm`` where it is missing raises
    :class:`BackendUnavailable`.
    """
    wanted = backend or HpcSettings.of(config).backend or "auto"
    if wanted not in BACKENDS:
        raise InputError(f"backend {wanted!r}: expected one of {', '.join(BACKENDS)}")
    if wanted == "auto":
        return "slurm" if slurm.slurm_available() else "local"
    if wanted == "slurm" and not slurm.slurm_available():
        raise BackendUnavailable(
            "SLURM is not installed here (no sbatch/squeue); use the local backend"
        )
    return wanted


def install_prefix(config: Settings = None) -> Path:
    """The framework's install prefix, used by batch scripts without Lmod.

    ``slurm.prefix`` in the configuration, else ``$MDLMA_PREFIX``, else
    :func:`unified_framework.shipped.default_prefix` (``<clone>/.mdlma`` in a checkout,
    the folder holding the running venv otherwise).
    """
    configured = HpcSettings.of(config).prefix or os.environ.get("MDLMA_PREFIX")
    return Path(configured).expanduser().absolute() if configured else default_prefix()


def script_context(template: Template, config: Settings = None) -> dict[str, Any]:
    """The ``mdlma`` names every script may use: module, prefix, modulepath, template, version."""
    settings = HpcSettings.of(config)
    prefix = install_prefix(settings)
    return {
        "mdlma": {
            "module": settings.module or "mdlma/unified-framework",
            "prefix": str(prefix),
            "modulepath": str(settings.modulepath or prefix / "modulefiles"),
            "template": template.name,
            "version": __version__,
        }
    }


def cluster_limits() -> ClusterLimits:
    """Partitions (from ``sinfo``) and QoS names (from ``sacctmgr``, if it answers)."""
    partitions, _nodes = slurm.sinfo()
    qos = slurm.qos_names()
    return ClusterLimits({p.name: p for p in partitions}, tuple(qos) if qos is not None else None)


def _with_config_defaults(
    template: Template, params: Mapping[str, Any], settings: HpcSettings
) -> dict[str, Any]:
    """Fill partition/account from ``slurm.default_partition``/``default_account`` if unset."""
    values = dict(params)
    for ptype, default in (
        ("partition", settings.default_partition),
        ("account", settings.default_account),
    ):
        for name, p in template.parameters.items():
            if (
                p.type == ptype
                and name not in values
                and not p.locked
                and not p.default
                and default
            ):
                values[name] = default
    return values


@dataclass
class PreparedJob:
    """A template with validated parameters and its rendered scripts."""

    template: Template
    params: dict[str, Any]
    scripts: list[RenderedJob]
    backend: str

    @property
    def workdir(self) -> str:
        return self.params["workdir"]


def prepare(
    template: str | Template,
    params: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    backend: str | None = None,
    allow_locked: bool = False,
    check_cluster: bool = True,
    config: Settings = None,
) -> PreparedJob:
    """Load, validate and render a template (no side effects).

    Parameters
    ----------
    template : str or Template
        Template name (folder under :func:`~.templates.templates_dir`) or a loaded one.
    params : mapping
        The user's values; see the template's ``form.yml``.
    cwd : path-like, optional
        Where a relative ``workdir`` starts.
    backend : str, optional
        ``auto``, ``slurm`` or ``local`` (default from the configuration).
    allow_locked : bool
        Permit changing parameters the administrator locked (for the hub).
    check_cluster : bool
        With SLURM, check partition, QoS, CPUs, memory, time and GPUs against ``sinfo``.
    """
    settings = HpcSettings.of(config)
    if not isinstance(template, Template):
        template = load_template(template, templates_dir(settings))
    chosen = backend_name(backend, settings)
    limits = cluster_limits() if chosen == "slurm" and check_cluster else None
    values = validate_params(
        template,
        _with_config_defaults(template, params or {}, settings),
        cwd=cwd,
        cluster=limits,
        allow_locked=allow_locked,
    )
    if chosen == "slurm":
        # The job's log goes under the working directory: refuse now what SLURM cannot write.
        slurm.escape_filename_pattern(values["workdir"], f"{template.name}: workdir")
    scripts = render(template, values, script_context(template, settings))
    return PreparedJob(template, values, scripts, chosen)


def load_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parameters from a YAML (or JSON) mapping file, as used by ``--params``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: parameter file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InputError(f"{path}: expected a mapping of parameter names to values")
    return data


def _after_ids(after: str | Iterable[str] | None) -> list[str]:
    if after is None:
        return []
    ids = [after] if isinstance(after, str) else list(after)
    for job_id in ids:
        if not re.fullmatch(r"\d+(_\d+)?|local-[0-9a-f]+\d*", str(job_id)):
            raise InputError(f"after: job id {job_id!r} is not a job id")
    return [str(j) for j in ids]


def check_submission(prepared: PreparedJob) -> list[str]:
    """Ask ``sbatch --test-only`` about every script; return its answers (nothing is queued).

    Dependent scripts are tested without their dependency (the jobs do not exist yet).
    """
    if prepared.backend != "slurm":
        raise BackendUnavailable(
            "sbatch --test-only needs SLURM; the local backend has no scheduler to ask"
        )
    answers = []
    with tempfile.TemporaryDirectory(prefix="mdlma-test-only-") as tmp:
        for job in prepared.scripts:
            script = Path(tmp) / f"{job.step}.sh"
            script.write_text(job.text, encoding="utf-8")
            answers.append(
                slurm.sbatch(
                    str(script), workdir=prepared.workdir, output="/dev/null", test_only=True
                )
            )
    return answers


def submit(
    template: str | Template | PreparedJob,
    params: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    backend: str | None = None,
    after: str | Iterable[str] | None = None,
    hold: bool = False,
    allow_locked: bool = False,
    config: Settings = None,
) -> JobRecord:
    """Validate, render and submit a template's jobs; write their record.

    Jobs of a multi-job template are chained with ``afterok`` dependencies; the first
    ones also wait for ``after`` (job ids) if given. ``hold`` submits them held
    (release with :func:`release`). The record folder
    ``<workdir>/.mdlma-jobs/<time>-<template>-<hex>/`` receives ``params.json``, the
    scripts, ``record.json`` and the jobs' logs.

    Returns
    -------
    JobRecord
        With the job ids; ``backend`` says whether SLURM or the local runner took it.

    Raises
    ------
    InputError
        Invalid parameters, or SLURM refused the job (:class:`~.slurm.SlurmRejected`).
    SlurmUnavailable
        The controller did not answer.
    """
    settings = HpcSettings.of(config)
    prepared = (
        template
        if isinstance(template, PreparedJob)
        else prepare(
            template, params, cwd=cwd, backend=backend, allow_locked=allow_locked, config=settings
        )
    )
    after_ids = _after_ids(after)
    if prepared.backend == "local":
        if hold:
            raise BackendUnavailable(
                "holding jobs needs SLURM; the local backend runs jobs at once"
            )
        if after_ids:
            raise BackendUnavailable(
                "dependencies on other submissions need SLURM; the local backend has none"
            )
        logger.warning(
            "%s: running %s locally as a subprocess", _local_reason(), prepared.template.name
        )
    folder = new_record_dir(prepared.workdir, prepared.template.name)
    entries: list[JobEntry] = []
    try:
        write_text_atomic(
            folder / "params.json", json.dumps(prepared.params, indent=2, ensure_ascii=False)
        )
        for index, job in enumerate(prepared.scripts):
            name = "job.sh" if index == 0 else f"{job.step}.sh"
            write_text_atomic(folder / name, job.text)
            array = _ARRAY_DIRECTIVE.search(job.text)
            entries.append(
                JobEntry(
                    step=job.step,
                    script=name,
                    job_id=None,
                    array=array.group(1) if array else None,
                    after=job.after,
                    log="slurm-%A_%a.out" if array else "slurm-%j.out",
                )
            )
        record = JobRecord(
            template=prepared.template.name,
            backend=prepared.backend,
            user=current_user(),
            host=platform.node(),
            submitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            workdir=prepared.workdir,
            path=str(folder.resolve()),
            jobs=entries,
            hold=hold,
            params=prepared.params,
            note=""
            if prepared.backend == "slurm"
            else f"{_local_reason()}: ran as a local subprocess",
        )
        if prepared.backend == "slurm":
            _submit_slurm(record, folder, after_ids, hold)
        else:
            local.submit(record, settings.cache_dir)
        write_text_atomic(folder / "record.json", record.to_json())
    except BaseException:
        submitted = [e.job_id for e in entries if e.job_id] if prepared.backend == "slurm" else []
        if submitted:
            # A later job of the chain failed: do not leave its predecessors queued.
            try:
                slurm.scancel(submitted)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to report
                logger.warning("could not cancel %s after a failed submission: %s", submitted, exc)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return record


def _local_reason() -> str:
    return (
        "the local backend was chosen" if slurm.slurm_available() else "SLURM is not installed here"
    )


def _submit_slurm(record: JobRecord, folder: Path, after_ids: list[str], hold: bool) -> None:
    by_step: dict[str, str] = {}
    # Absolute, so SLURM does not put the working directory in front and expand '%' in it.
    logs = slurm.escape_filename_pattern(record.path, f"{record.template}: workdir")
    for entry in record.jobs:
        depends = [by_step[entry.after]] if entry.after else after_ids
        entry.dependency = "afterok:" + ":".join(depends) if depends else None
        entry.job_id = slurm.sbatch(
            str(folder / entry.script),
            workdir=record.workdir,
            output=f"{logs}/{entry.log}",
            dependency=entry.dependency,
            hold=hold,
        )
        by_step[entry.step] = entry.job_id


def resubmit(
    record: str | os.PathLike | JobRecord,
    changes: Mapping[str, Any] | None = None,
    *,
    backend: str | None = None,
    config: Settings = None,
) -> JobRecord:
    """Submit a recorded job again (same template and parameters, optionally changed)."""
    old = record if isinstance(record, JobRecord) else load_record(record)
    settings = HpcSettings.of(config)
    template = load_template(old.template, templates_dir(settings))
    # Locked values are the administrator's: take today's, not the recorded ones.
    params = {
        k: v
        for k, v in old.params.items()
        if k in template.parameters and not template.parameters[k].locked
    }
    params.update(changes or {})
    return submit(template, params, backend=backend, config=settings)


def _matches(job_id: str, array_job_id: str, wanted: set[str]) -> bool:
    return job_id in wanted or array_job_id in wanted


def status(
    job_ids: Iterable[str] | None = None,
    *,
    all_users: bool = False,
    backend: str | None = None,
    config: Settings = None,
) -> list[JobStatus]:
    """Current state of the user's jobs (one ``squeue`` call; array tasks one per row).

    Parameters
    ----------
    job_ids : iterable of str, optional
        Only these jobs (an array id selects all its tasks). Jobs the controller has
        forgotten are looked up in the accounting database (state from ``sacct``); if
        that fails too their state is ``UNKNOWN`` — never a guess that they died.
    all_users : bool
        Everyone's jobs instead of only the caller's.

    Raises
    ------
    SlurmUnavailable
        The controller did not answer after a few retries (states unknown).
    """
    settings = HpcSettings.of(config)
    wanted = {str(j) for j in job_ids} if job_ids is not None else None
    user = None if all_users else current_user()
    if backend_name(backend, settings) == "local":
        jobs = local.status(settings.cache_dir, current_user())
    else:
        jobs = slurm.squeue(user)
    if wanted is None:
        return jobs
    found = [j for j in jobs if _matches(j.job_id, j.array_job_id, wanted)]
    missing = wanted - {j.job_id for j in found} - {j.array_job_id for j in found}
    if missing and backend_name(backend, settings) == "slurm":
        found += _forgotten(sorted(missing), user)
    return found


def _forgotten(job_ids: list[str], user: str | None) -> list[JobStatus]:
    """Jobs squeue no longer lists: their state from sacct, else UNKNOWN."""
    try:
        records = {r.job_id: r for r in slurm.sacct(job_ids, user)}
    except slurm.SlurmError as exc:
        logger.warning("sacct could not tell the state of %s: %s", job_ids, exc)
        records = {}
    result = []
    for job_id in job_ids:
        matching = [
            r for r in records.values() if r.job_id == job_id or r.job_id.split("_")[0] == job_id
        ]
        found: list[JobAccounting | None] = list(matching) or [None]
        for r in found:
            result.append(
                JobStatus(
                    job_id=r.job_id if r else job_id,
                    array_job_id=(r.job_id if r else job_id).split("_")[0],
                    array_task_id=(r.job_id.partition("_")[2] or None) if r else None,
                    name=r.name if r else "",
                    user=r.user if r else "",
                    state=r.state if r else "UNKNOWN",
                    reason=None if r else "not known to squeue or sacct",
                    partition=r.partition if r else "",
                    elapsed="",
                    time_limit=r.time_limit or "" if r else "",
                    submit_time=r.submit_time if r else None,
                    start_time=r.start_time if r else None,
                    nodes=r.nodes if r else None,
                    cpus=r.cpus if r else 0,
                    workdir=r.workdir or "" if r else "",
                )
            )
    return result


def history(
    job_ids: Iterable[str] | None = None,
    *,
    since: str | None = None,
    all_users: bool = False,
    backend: str | None = None,
    config: Settings = None,
) -> list[JobAccounting]:
    """Accounting with efficiency: elapsed, CPU and memory efficiency, exit code, state.

    Parameters
    ----------
    job_ids : iterable of str, optional
        Only these jobs; otherwise the user's jobs since ``since``.
    since : str, optional
        Start of the window, any ``sacct --starttime`` form (``now-7days``, ISO date);
        default seven days ago.
    """
    settings = HpcSettings.of(config)
    if backend_name(backend, settings) == "local":
        records = local.history(settings.cache_dir, current_user())
        if job_ids is not None:
            wanted = {str(j) for j in job_ids}
            records = [r for r in records if r.job_id in wanted or r.job_id.split("_")[0] in wanted]
        return records
    ids = [str(j) for j in job_ids] if job_ids is not None else None
    return slurm.sacct(ids, None if all_users else current_user(), since or "now-7days")


def workdirs(
    *, since: str | None = None, backend: str | None = None, config: Settings = None
) -> list[str]:
    """Working directories of the user's jobs since ``since`` (default seven days ago), each once.

    What :func:`history` would give in its ``workdir`` fields, without the rest of the
    accounting: one short ``sacct`` call where the user has many jobs.

    Examples
    --------
    >>> from unified_framework import hpc
    >>> folders = hpc.workdirs(since="now-90days")  # doctest: +SKIP
    """
    settings = HpcSettings.of(config)
    if backend_name(backend, settings) == "local":
        records = local.history(settings.cache_dir, current_user())
        return list(dict.fromkeys(r.workdir for r in records if r.workdir))
    return slurm.sacct_workdirs(current_user(), since or "now-7days")


def cancel(job_ids: Sequence[str], *, backend: str | None = None, config: Settings = None) -> None:
    """Cancel jobs by id (an array id cancels all its tasks)."""
    settings = HpcSettings.of(config)
    if not job_ids:
        raise InputError("cancel: no job ids given")
    if backend_name(backend, settings) == "local":
        local.cancel(settings.cache_dir, [str(j) for j in job_ids])
    else:
        slurm.scancel([str(j) for j in job_ids])


def release(job_ids: Sequence[str]) -> None:
    """Release jobs submitted with ``hold=True`` (SLURM only)."""
    slurm.scontrol_release([str(j) for j in job_ids])


# --------------------------------------------------------------------------- resources
@dataclass
class DiskUsage:
    """Space of the file system holding ``path`` and the user's quota there, if known."""

    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    quota_used_bytes: int | None = None
    quota_limit_bytes: int | None = None


@dataclass
class Resources:
    """What the cluster (or this machine, for the local backend) offers the user."""

    backend: str
    partitions: list[Partition]
    nodes: list[Node]
    disks: list[DiskUsage] = field(default_factory=list)


def parse_quota(text: str) -> dict[str, tuple[int, int]]:
    """Parse ``quota --no-wrap --show-mntpoint -p -u`` output into {mount: (used, limit)} bytes.

    Block figures are KiB; a limit of 0 (none) falls back to the soft limit.
    """
    quotas = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[1].rstrip("*").isdigit():
            continue
        # filesystem/mount, blocks, quota(soft), limit(hard), grace, files, ...
        used = int(fields[1].rstrip("*"))
        soft, hard = (int(x) if x.isdigit() else 0 for x in fields[2:4])
        limit = hard or soft
        if limit:
            quotas[fields[0]] = (used * 1024, limit * 1024)
    return quotas


def disk_usage(paths: Iterable[str | os.PathLike]) -> list[DiskUsage]:
    """Free space of each path's file system plus the user's quota where ``quota`` reports one."""
    quotas: dict[str, tuple[int, int]] = {}
    if shutil.which("quota"):
        proc = subprocess.run(
            ["quota", "--no-wrap", "--show-mntpoint", "-p", "-u", current_user()],
            capture_output=True,
            text=True,
            timeout=30,
        )
        quotas = parse_quota(proc.stdout)
    result = []
    for path in paths:
        path = Path(path).expanduser()
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        mount = _mount_point(probe)
        used, limit = quotas.get(mount, (None, None))
        result.append(DiskUsage(str(path), usage.total, usage.used, usage.free, used, limit))
    return result


def _mount_point(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def resources(
    paths: Iterable[str | os.PathLike] | None = None,
    *,
    backend: str | None = None,
    config: Settings = None,
) -> Resources:
    """Partitions, nodes (CPUs, GPUs, memory) and disk space of the user's folders.

    ``paths`` defaults to the configured ``home`` and the current directory.
    """
    settings = HpcSettings.of(config)
    chosen = backend_name(backend, settings)
    if chosen == "slurm":
        partitions, nodes = slurm.sinfo()
    else:
        import psutil

        cpus = os.cpu_count() or 1
        memory = psutil.virtual_memory()
        node = Node(
            name=platform.node(),
            partitions=["local"],
            state="idle",
            cpus=cpus,
            cpus_allocated=0,
            cpus_idle=cpus,
            memory_mb=memory.total / 2**20,
            free_memory_mb=memory.available / 2**20,
            gpus=0,
            gres=None,
            features=None,
        )
        nodes = [node]
        partitions = [
            Partition(
                name="local",
                default=True,
                available=True,
                max_time="UNLIMITED",
                default_time=None,
                nodes=[node.name],
                cpus=cpus,
                cpus_idle=cpus,
                max_cpus_per_node=cpus,
                max_memory_mb_per_node=node.memory_mb,
                gpus=0,
                max_gpus_per_node=0,
            )
        ]
    paths = list(paths) if paths is not None else [settings.home, os.getcwd()]
    return Resources(chosen, partitions, nodes, disk_usage(paths))


__all__ = [
    "RECORDS_FOLDER",
    "DiskUsage",
    "PreparedJob",
    "Resources",
    "backend_name",
    "cancel",
    "cluster_limits",
    "current_user",
    "disk_usage",
    "history",
    "install_prefix",
    "load_params_file",
    "prepare",
    "release",
    "resources",
    "resubmit",
    "script_context",
    "status",
    "submit",
    "check_submission",
]
