"""``mdlma modules``: the module catalogue, its Lmod modulefiles and kernelspecs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..shipped import checkout_root, shipped_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "modules", help="module catalogue -> Lmod modulefiles and Jupyter kernels"
    )
    sub = parser.add_subparsers(dest="modules_verb", required=True)
    # The default catalogue is looked up when a verb runs, so a broken installation
    # breaks only 'mdlma modules', not the parser of every other verb.
    catalogue_help = "folder of module YAMLs (default: the installation's modules/)"

    show = sub.add_parser("list", help="list the modules of the catalogue")
    show.add_argument("--catalogue", type=Path, default=None, help=catalogue_help)
    show.set_defaults(func=_list)

    install = sub.add_parser(
        "install", help="write modulefiles and kernelspecs into an install prefix"
    )
    install.add_argument("--prefix", type=Path, required=True)
    install.add_argument("--catalogue", type=Path, default=None, help=catalogue_help)
    install.set_defaults(func=_install)

    sync = sub.add_parser(
        "sync-repo", help="regenerate the repository's lmod/ folder from modules/"
    )
    sync.add_argument("--catalogue", type=Path, default=None, help=catalogue_help)
    sync.add_argument("--lmod-dir", type=Path, default=None, help="default: lmod/ of the clone")
    sync.set_defaults(func=_sync)


def _catalogue(args: argparse.Namespace):
    from ..modules import load_catalogue

    return load_catalogue(args.catalogue if args.catalogue is not None else shipped_dir("modules"))


def _list(args: argparse.Namespace) -> int:
    for spec in _catalogue(args):
        print(f"{spec.name}/{spec.version}\t{spec.description}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from ..modules import install_modules

    for path in install_modules(_catalogue(args), args.prefix):
        print(f"wrote {path}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from ..modules import sync_repo_modulefiles

    lmod_dir = args.lmod_dir
    if lmod_dir is None:
        root = checkout_root()
        if root is None:
            raise InputError(
                "--lmod-dir: needed outside a clone (sync-repo regenerates a clone's lmod/ folder)"
            )
        lmod_dir = root / "lmod"
    for path in sync_repo_modulefiles(_catalogue(args), lmod_dir):
        print(f"wrote {path}")
    return 0
