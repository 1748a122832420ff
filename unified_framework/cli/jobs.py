"""``mdlma jobs``: SLURM job templates, submission, status, history and resources."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from ..errors import InputError

ACTIONS = "templates, render, submit, status, history, cancel, resources, records, resubmit"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mdlma jobs`` and its actions."""
    parser = subparsers.add_parser(
        "jobs",
        help="SLURM job templates: render, submit, status, history, cancel, resources",
        description=(
            "Submit the framework's workflows as SLURM batch jobs from templates "
            "(slurm_templates/<name>/). Without SLURM installed, jobs run as local subprocesses."
        ),
    )
    parser.add_argument(
        "--backend", choices=("auto", "slurm", "local"), help="default: slurm.backend, else auto"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p = actions.add_parser("templates", help="list the templates, or show one's parameters")
    p.add_argument("name", nargs="?", help="template to describe")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_templates)

    for action, text in (("render", "print the batch script(s)"), ("submit", "submit the job(s)")):
        p = actions.add_parser(action, help=text)
        p.add_argument("template", help="template name (see 'mdlma jobs templates')")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="set a parameter (repeatable)",
        )
        p.add_argument(
            "--params", metavar="FILE.yml", help="parameters from a YAML mapping (--set wins)"
        )
        p.add_argument(
            "--no-cluster-check",
            action="store_true",
            help="skip the partition/QoS/limit checks against sinfo",
        )
        if action == "submit":
            p.add_argument(
                "--hold", action="store_true", help="submit held (release with scontrol release)"
            )
            p.add_argument(
                "--after",
                action="append",
                default=[],
                metavar="JOBID",
                help="start after this job succeeded",
            )
            p.add_argument(
                "--test-only",
                action="store_true",
                help="ask 'sbatch --test-only' instead of submitting",
            )
            p.add_argument("--json", action="store_true", help="print the record as JSON")
        p.set_defaults(func=_render if action == "render" else _submit)

    p = actions.add_parser("status", help="state of your jobs (squeue)")
    p.add_argument("job_ids", nargs="*", metavar="JOBID")
    p.add_argument("--all", action="store_true", help="everyone's jobs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)

    p = actions.add_parser("history", help="finished jobs with CPU and memory efficiency (sacct)")
    p.add_argument("job_ids", nargs="*", metavar="JOBID")
    p.add_argument(
        "--since",
        default=None,
        help="start of the window (sacct --starttime form; default now-7days)",
    )
    p.add_argument("--all", action="store_true", help="everyone's jobs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_history)

    p = actions.add_parser("cancel", help="cancel jobs")
    p.add_argument("job_ids", nargs="+", metavar="JOBID")
    p.set_defaults(func=_cancel)

    p = actions.add_parser("resources", help="partitions, nodes, CPUs, GPUs, memory and disk space")
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="folders to report disk space of (default: home and .)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_resources)

    p = actions.add_parser("records", help="submissions recorded in a working directory")
    p.add_argument("root", nargs="?", default=".", help="working directory (default .)")
    p.add_argument("-r", "--recursive", action="store_true", help="also look in subfolders")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_records)

    p = actions.add_parser("resubmit", help="submit a recorded job again")
    p.add_argument("record", help="record folder (.mdlma-jobs/...)")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="change a parameter"
    )
    p.set_defaults(func=_resubmit)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    from ..hpc import load_params_file

    params: dict[str, Any] = load_params_file(args.params) if getattr(args, "params", None) else {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--set {item!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


def _templates(args: argparse.Namespace) -> int:
    from ..hpc import list_templates, load_template

    if args.name:
        template = load_template(args.name)
        if args.json:
            _print_json(
                {
                    "name": template.name,
                    "title": template.title,
                    "description": template.description,
                    "jobs": [asdict(s) for s in template.steps],
                    "parameters": {n: asdict(p) for n, p in template.parameters.items()},
                }
            )
            return 0
        print(f"{template.name}: {template.title}\n{template.description}\n")
        _table(
            [
                [p.name, p.describe(), repr(p.default) if p.default != "" else "", p.help]
                for p in template.parameters.values()
            ],
            ["PARAMETER", "TYPE", "DEFAULT", "HELP"],
        )
        return 0
    templates = list_templates()
    if args.json:
        _print_json(
            [{"name": t.name, "title": t.title, "description": t.description} for t in templates]
        )
        return 0
    _table([[t.name, t.title] for t in templates], ["TEMPLATE", "TITLE"])
    return 0


def _prepare(args: argparse.Namespace):
    from ..hpc import prepare

    return prepare(
        args.template,
        _parameters(args),
        backend=args.backend,
        check_cluster=not args.no_cluster_check,
    )


def _render(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    for index, job in enumerate(prepared.scripts):
        if index:
            print(
                f"\n# ===== job {index + 1} of {len(prepared.scripts)}: {job.step} (afterok: {job.after}) ====="
            )
        sys.stdout.write(job.text)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from ..hpc import check_submission, submit

    prepared = _prepare(args)
    if args.test_only:
        for job, answer in zip(prepared.scripts, check_submission(prepared)):
            print(f"{job.step}: {answer}")
        return 0
    record = submit(prepared, after=args.after or None, hold=args.hold)
    if args.json:
        print(record.to_json())
        return 0
    if record.backend == "local":
        print(f"note: {record.note}", file=sys.stderr)
    for job in record.jobs:
        extra = f" (array {job.array})" if job.array else ""
        extra += f" after {job.dependency}" if job.dependency else ""
        print(f"submitted {record.template}/{job.step}: job {job.job_id}{extra}")
    print(f"record: {record.path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..hpc import status

    jobs = status(args.job_ids or None, all_users=args.all, backend=args.backend)
    if args.json:
        _print_json([asdict(j) for j in jobs])
        return 0
    _table(
        [
            [
                j.job_id,
                j.state,
                j.name,
                j.user,
                j.partition,
                j.elapsed,
                j.time_limit,
                j.nodes or j.reason,
            ]
            for j in jobs
        ],
        ["JOBID", "STATE", "NAME", "USER", "PARTITION", "ELAPSED", "LIMIT", "NODES/REASON"],
    )
    return 0


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _history(args: argparse.Namespace) -> int:
    from ..hpc import history

    records = history(
        args.job_ids or None, since=args.since, all_users=args.all, backend=args.backend
    )
    if args.json:
        _print_json([r.as_dict() for r in records])
        return 0
    _table(
        [
            [
                r.job_id,
                r.name,
                r.state,
                "" if r.exit_code is None else f"{r.exit_code}:{r.signal or 0}",
                f"{r.elapsed_s:.0f}s",
                r.cpus,
                _percent(r.cpu_efficiency),
                "" if r.max_rss_mb is None else f"{r.max_rss_mb:.0f}M",
                "" if r.req_mem_mb is None else f"{r.req_mem_mb:.0f}M",
                _percent(r.memory_efficiency),
            ]
            for r in records
        ],
        [
            "JOBID",
            "NAME",
            "STATE",
            "EXIT",
            "ELAPSED",
            "CPUS",
            "CPU-EFF",
            "MAXRSS",
            "REQMEM",
            "MEM-EFF",
        ],
    )
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from ..hpc import cancel

    cancel(args.job_ids, backend=args.backend)
    print(f"cancelled {' '.join(args.job_ids)}")
    return 0


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value / 2**30:.1f}G"


def _resources(args: argparse.Namespace) -> int:
    from ..hpc import resources

    info = resources(args.paths or None, backend=args.backend)
    if args.json:
        _print_json(asdict(info))
        return 0
    print(f"backend: {info.backend}")
    _table(
        [
            [
                p.name + ("*" if p.default else ""),
                "up" if p.available else "down",
                p.max_time,
                len(p.nodes),
                f"{p.cpus_idle}/{p.cpus}",
                f"{p.max_memory_mb_per_node:.0f}M",
                p.gpus,
            ]
            for p in info.partitions
        ],
        ["PARTITION", "STATE", "MAXTIME", "NODES", "CPUS(IDLE/ALL)", "MEM/NODE", "GPUS"],
    )
    print()
    _table(
        [
            [
                n.name,
                n.state,
                f"{n.cpus_idle}/{n.cpus}",
                f"{n.memory_mb:.0f}M",
                "" if n.free_memory_mb is None else f"{n.free_memory_mb:.0f}M",
                n.gpus,
                ",".join(n.partitions),
            ]
            for n in info.nodes
        ],
        ["NODE", "STATE", "CPUS(IDLE/ALL)", "MEMORY", "FREE", "GPUS", "PARTITIONS"],
    )
    print()
    _table(
        [
            [
                d.path,
                _gib(d.free_bytes),
                _gib(d.total_bytes),
                ""
                if d.quota_limit_bytes is None
                else f"{_gib(d.quota_used_bytes)} of {_gib(d.quota_limit_bytes)}",
            ]
            for d in info.disks
        ],
        ["PATH", "FREE", "SIZE", "QUOTA"],
    )
    return 0


def _records(args: argparse.Namespace) -> int:
    from ..hpc import list_records

    records = list_records(args.root, recursive=args.recursive)
    if args.json:
        _print_json([{**json.loads(r.to_json()), "params": r.params} for r in records])
        return 0
    _table(
        [[r.submitted, r.template, r.backend, " ".join(r.job_ids), r.path] for r in records],
        ["SUBMITTED", "TEMPLATE", "BACKEND", "JOBIDS", "RECORD"],
    )
    return 0


def _resubmit(args: argparse.Namespace) -> int:
    from ..hpc import resubmit

    record = resubmit(args.record, _parameters(args), backend=args.backend)
    print(f"submitted {record.template}: jobs {' '.join(record.job_ids)}")
    print(f"record: {record.path}")
    return 0
