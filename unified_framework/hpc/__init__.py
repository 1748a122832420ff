"""SLURM batch jobs from self-describing templates (``slurm_templates/<name>/``).

Typical use::

    from unified_framework import hpc

    record = hpc.submit("python-script", {"job_name": "test", "script": "run.py"})
    hpc.status(record.job_ids)          # JobStatus per job / array task
    hpc.history(record.job_ids)         # sacct: elapsed, CPU and memory efficiency
    hpc.list_records(".")               # every submission made from this folder

Without SLURM the same calls run the scripts as local subprocesses (``backend="local"``).
See ``docs/slurm.md``.
"""

from .dask_cluster import dask_slurm_cluster
from .jobs import (
    DiskUsage,
    PreparedJob,
    Resources,
    backend_name,
    cancel,
    check_submission,
    cluster_limits,
    current_user,
    disk_usage,
    history,
    install_prefix,
    load_params_file,
    prepare,
    release,
    resources,
    resubmit,
    status,
    submit,
    workdirs,
)
from .records import JobEntry, JobRecord, find_record, job_log_path, list_records, load_record
from .render import RenderedJob, render
from .settings import HpcSettings
from .slurm import (
    FINISHED_STATES,
    JobAccounting,
    JobStatus,
    Node,
    Partition,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
)
from .templates import Parameter, Template, list_templates, load_template, templates_dir
from .validation import ClusterLimits, form_errors, validate_params

__all__ = [
    "FINISHED_STATES",
    "ClusterLimits",
    "DiskUsage",
    "HpcSettings",
    "JobAccounting",
    "JobEntry",
    "JobRecord",
    "JobStatus",
    "Node",
    "Parameter",
    "Partition",
    "PreparedJob",
    "RenderedJob",
    "Resources",
    "SlurmError",
    "SlurmRejected",
    "SlurmUnavailable",
    "Template",
    "backend_name",
    "cancel",
    "check_submission",
    "cluster_limits",
    "current_user",
    "dask_slurm_cluster",
    "disk_usage",
    "find_record",
    "form_errors",
    "history",
    "install_prefix",
    "job_log_path",
    "list_records",
    "list_templates",
    "load_params_file",
    "load_record",
    "load_template",
    "prepare",
    "release",
    "render",
    "resources",
    "resubmit",
    "status",
    "submit",
    "templates_dir",
    "validate_params",
    "workdirs",
]
