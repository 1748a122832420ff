"""``mdlma info``: versions, cores, memory, GPUs and optional backends."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="report versions, cores, memory, GPUs and optional backends"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from ..system_info import collect_system_info

    info = collect_system_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"MDLMA unified framework {info['mdlma']}  (Python {info['python']}, {info['platform']})")
    print(f"module      {info['module'] or '(not loaded through Lmod)'}")
    print(f"config      {info['config_file']}")
    print(f"CPUs        {info['cpus']} usable of {info['cpus_total']}")
    print(f"memory      {info['memory_gib']} GiB ({info['memory_available_gib']} GiB available)")
    if info["gpus"]:
        for gpu in info["gpus"]:
            print(
                f"GPU {gpu['index']}       {gpu['name']}, {gpu['memory_gib']} GiB, compute {gpu['capability']}"
            )
    else:
        print("GPUs        none visible to torch (CPU mode)")
    slurm = info["scheduler"]["sbatch"]
    print(
        f"SLURM       {'sbatch at ' + slurm if slurm else 'not found (jobs run as local processes)'}"
    )
    print("\npackages")
    for name, version in info["packages"].items():
        print(f"  {name:<22}{version or '-'}")
    print("\noptional backends")
    for name, backend in info["backends"].items():
        mark = "yes" if backend["available"] else "no "
        print(f"  {name:<14}{mark}  {backend['purpose']}")
    return 0
