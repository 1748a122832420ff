"""One place for configuration: ``~/.config/mdlma/config.toml`` plus ``MDLMA_*`` variables.

Precedence, highest first: ``MDLMA_<SECTION>_<KEY>`` / ``MDLMA_<KEY>`` environment
variables, the TOML file (path from ``MDLMA_CONFIG``, default
``$XDG_CONFIG_HOME/mdlma/config.toml``), then the defaults below. Every part of the
framework reads its settings through :func:`load_config`; nothing caches it globally,
so tests and long-running apps see changes to the environment.

Example ``config.toml``::

    home = "/data/beamline/alice/mdlma"

    [slurm]
    default_partition = "batch"

    [scicat]
    url = "https://scicat.example.org/api/v3"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError

DEFAULTS: dict[str, Any] = {
    # Root of the user's data and job directories (the dashboard only reads below it).
    "home": "~/mdlma",
    "cache_dir": "~/.cache/mdlma",
    # Local SQLite catalogue used when no SciCat server is configured.
    "catalogue": "~/mdlma/catalogue.sqlite",
    # backend: auto (SLURM when sbatch exists, else local subprocesses), slurm or local.
    # prefix/modulepath/templates_dir: empty = the installation's (unified_framework.shipped:
    # <clone>/.mdlma or the folder holding the venv), <prefix>/modulefiles, its slurm_templates/.
    "slurm": {
        "default_partition": "",
        "default_account": "",
        "module": "mdlma/unified-framework",
        "backend": "auto",
        "prefix": "",
        "modulepath": "",
        "templates_dir": "",
    },
    # owner* / contact_email / creation_location fall back to the login name, its
    # primary group, user@host and the host name when empty.
    "scicat": {
        "url": "",
        "token": "",
        "username": "",
        "password": "",
        "owner": "",
        "owner_group": "",
        "contact_email": "",
        "creation_location": "",
    },
    "dashboard": {"port": 8501},
    # nnU-Net's three folders (nnUNet_raw, nnUNet_preprocessed, nnUNet_results); empty =
    # <home>/nnunet/nnUNet_raw and so on (unified_framework.nnunet.paths).
    "nnunet": {"raw": "", "preprocessed": "", "results": ""},
}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the path of the user's configuration file (it need not exist)."""
    env = os.environ if env is None else env
    if env.get("MDLMA_CONFIG"):
        return Path(env["MDLMA_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mdlma" / "config.toml"


def _coerce(raw: str, like: Any, name: str) -> Any:
    """``raw`` (the text of environment variable ``name``) as the type of the default ``like``."""
    if isinstance(like, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    kind = int if isinstance(like, int) else float if isinstance(like, float) else None
    if kind is None:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise InputError(
            f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the configuration and apply ``MDLMA_*`` environment overrides.

    Parameters
    ----------
    env : mapping, optional
        Environment to read; defaults to ``os.environ``.

    Returns
    -------
    dict
        Nested settings; path-valued keys (``home``, ``cache_dir``, ``catalogue``) are
        expanded to absolute paths.
    """
    env = os.environ if env is None else env
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    path = config_path(env)
    if path.is_file():
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from None
        for key, value in user.items():
            if isinstance(config.get(key), dict) and isinstance(value, dict):
                config[key].update(value)
            else:
                config[key] = value
    for key, value in list(config.items()):
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                name = f"MDLMA_{key}_{sub}".upper()
                if name in env:
                    value[sub] = _coerce(env[name], subvalue, name)
        else:
            name = f"MDLMA_{key}".upper()
            if name in env:
                config[key] = _coerce(env[name], value, name)
    for key in ("home", "cache_dir", "catalogue"):
        config[key] = str(Path(os.path.expandvars(str(config[key]))).expanduser().absolute())
    return config
