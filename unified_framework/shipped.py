"""Where the folders shipped beside the package are: ``dashboard/``, ``slurm_templates/``, ``modules/``.

The package needs three folders that are not Python modules: the Streamlit app
(``dashboard/``), the job templates (``slurm_templates/``) and the module catalogue
(``modules/``). Every part of the framework finds them through :func:`shipped_dir`, the
one lookup, which tries in this order:

1. **A source checkout** (``scripts/install``'s editable install, a developer's clone):
   ``<clone>/<name>``, recognised by the clone's ``pyproject.toml`` next to the package.
2. **An installed wheel** (``pip install``, ``scripts/install --no-cache``): the wheel
   carries the folders as data files (``[tool.setuptools.data-files]`` in
   ``pyproject.toml``), which pip puts below the environment's data directory:
   ``<sys.prefix>/share/mdlma/<name>`` in a virtualenv or prefix, the user base's
   ``share/mdlma`` for ``pip install --user``, and ``<DIR>/share/mdlma`` next to the
   package for ``pip install --target DIR``.

The job templates can be replaced by a site's own with ``slurm.templates_dir`` in the
configuration (see :func:`unified_framework.hpc.templates_dir`).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from .errors import BackendUnavailable

#: The folders the wheel ships as data files (below ``share/mdlma``).
SHIPPED = ("dashboard", "slurm_templates", "modules")
_PACKAGE = Path(__file__).resolve().parent
_DATA_SUBDIR = Path("share") / "mdlma"


def checkout_root() -> Path | None:
    """The source checkout the package is imported from, or None for an installed package.

    Examples
    --------
    >>> root = checkout_root()
    >>> root is None or (root / "pyproject.toml").is_file()
    True
    """
    root = _PACKAGE.parent
    return (
        root
        if (root / "pyproject.toml").is_file() and (root / "slurm_templates").is_dir()
        else None
    )


def _candidates(name: str) -> list[Path]:
    found = []
    root = checkout_root()
    if root is not None:
        found.append(root / name)
    # Installed data files: the environment's data directory (venv, prefix), the user
    # base (pip install --user) and a --target folder (its share/ is next to the package).
    data_roots = [
        sysconfig.get_path("data"),
        sysconfig.get_path("data", f"{os.name}_user"),
        str(_PACKAGE.parent),
    ]
    for data in dict.fromkeys(data_roots):
        found.append(Path(data) / _DATA_SUBDIR / name)
    return found


def shipped_dir(name: str) -> Path:
    """The folder ``name`` (one of :data:`SHIPPED`) of this installation.

    Parameters
    ----------
    name : str
        ``dashboard``, ``slurm_templates`` or ``modules``.

    Returns
    -------
    Path
        The first existing folder of the lookup order in the module docstring.

    Raises
    ------
    BackendUnavailable
        The installation has no such folder (a wheel built without its data files).

    Examples
    --------
    >>> (shipped_dir("slurm_templates") / "_shared" / "resources.yml").is_file()
    True
    """
    if name not in SHIPPED:
        raise ValueError(
            f"{name!r} is not one of {', '.join(SHIPPED)}"
        )  # a programming error, not input
    candidates = _candidates(name)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise BackendUnavailable(
        f"{name}/ not found in this installation (looked in {', '.join(map(str, candidates))}); "
        "reinstall the framework (pip install of its wheel, or scripts/install)"
    )


def default_prefix() -> Path:
    """The install prefix when neither the configuration nor ``$MDLMA_PREFIX`` names one.

    ``<clone>/.mdlma`` in a checkout; otherwise the folder holding the running
    virtualenv, which is the prefix in ``scripts/install``'s layout
    (``<prefix>/venv``).

    Examples
    --------
    >>> default_prefix().is_absolute()
    True
    """
    root = checkout_root()
    return root / ".mdlma" if root is not None else Path(sys.prefix).absolute().parent
