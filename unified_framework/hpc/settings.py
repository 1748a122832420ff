"""The settings the job layer reads from the configuration, as one typed object.

:func:`unified_framework.config.load_config` returns the whole configuration as nested
mappings; :class:`HpcSettings` holds what ``hpc`` uses of it (the ``[slurm]`` section,
``home`` and ``cache_dir``), read once per call of a public function and passed on
to the helpers. Every public ``hpc`` function takes ``config=``: ``None`` (read the
configuration), an :class:`HpcSettings`, or a configuration mapping (as
``load_config`` returns, e.g. changed in a test).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import DEFAULTS, load_config

_SLURM_DEFAULTS: dict[str, Any] = DEFAULTS["slurm"]


@dataclass(frozen=True)
class HpcSettings:
    """What batch jobs are configured with (``config.toml``'s ``[slurm]``, ``home``, ``cache_dir``).

    Attributes
    ----------
    home : str
        The user's data folder (default disk-usage path of :func:`~.jobs.resources`).
    cache_dir : str
        Where the local backend keeps its job table.
    backend : str
        ``auto`` (SLURM when ``sbatch`` exists), ``slurm`` or ``local``.
    default_partition, default_account : str
        Filled into a template's partition/account parameter when the user gives none.
    module : str
        The Lmod module a batch script loads.
    prefix : str
        Install prefix for scripts without Lmod (empty: ``$MDLMA_PREFIX`` or the
        installation's, see :func:`~.jobs.install_prefix`).
    modulepath : str
        Where the module is (empty: ``<prefix>/modulefiles``).
    templates_dir : str
        The job templates (empty: the shipped ``slurm_templates/``).

    Examples
    --------
    >>> HpcSettings.of({"home": "/h", "cache_dir": "/c", "slurm": {"backend": "local"}}).backend
    'local'
    """

    home: str
    cache_dir: str
    backend: str = _SLURM_DEFAULTS["backend"]
    default_partition: str = _SLURM_DEFAULTS["default_partition"]
    default_account: str = _SLURM_DEFAULTS["default_account"]
    module: str = _SLURM_DEFAULTS["module"]
    prefix: str = _SLURM_DEFAULTS["prefix"]
    modulepath: str = _SLURM_DEFAULTS["modulepath"]
    templates_dir: str = _SLURM_DEFAULTS["templates_dir"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HpcSettings:
        """The job settings of a configuration mapping (missing keys: the defaults)."""
        section = config.get("slurm") or {}

        def text(key: str) -> str:
            value = section.get(key)
            return _SLURM_DEFAULTS[key] if value is None else str(value)

        return cls(
            home=str(config.get("home") or DEFAULTS["home"]),
            cache_dir=str(config.get("cache_dir") or DEFAULTS["cache_dir"]),
            **{key: text(key) for key in _SLURM_DEFAULTS},
        )

    @classmethod
    def of(cls, config: HpcSettings | Mapping[str, Any] | None = None) -> HpcSettings:
        """``config`` itself, a configuration mapping's settings, or the configuration's."""
        if isinstance(config, HpcSettings):
            return config
        return cls.from_config(load_config() if config is None else config)
