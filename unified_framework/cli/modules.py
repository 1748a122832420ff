"""``mdlma modules``: the module catalogue, its Lmod modulefiles and kernelspecs."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    parser = subparsers.add_parser("modules", help="module catalogue -> Lmod modulefiles and Jupyter kernels")
    sub = parser.add_subparsers(dest="modules_verb", required=True)
    catalogue_default = REPO / "modules"

    show = sub.add_parser("list", help="list the modules of the catalogue")
    show.add_argument("--catalogue", type=Path, default=catalogue_default)
    show.set_defaults(func=_list)

    install = sub.add_parser("install", help="write modulefiles and kernelspecs into an install prefix")
    install.add_argument("--prefix", type=Path, required=True)
    install.add_argument("--catalogue", type=Path, default=catalogue_default)
    install.set_defaults(func=_install)

    sync = sub.add_parser("sync-repo", help="regenerate the repository's lmod/ folder from modules/")
    sync.add_argument("--catalogue", type=Path, default=catalogue_default)
    sync.add_argument("--lmod-dir", type=Path, default=REPO / "lmod")
    sync.set_defaults(func=_sync)


def _list(args: argparse.Namespace) -> int:
    from ..modules import load_catalogue

    for spec in load_catalogue(args.catalogue):
        print(f"{spec.name}/{spec.version}\t{spec.description}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from ..modules import install_modules, load_catalogue

    for path in install_modules(load_catalogue(args.catalogue), args.prefix):
        print(f"wrote {path}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from ..modules import load_catalogue, sync_repo_modulefiles

    for path in sync_repo_modulefiles(load_catalogue(args.catalogue), args.lmod_dir):
        print(f"wrote {path}")
    return 0
