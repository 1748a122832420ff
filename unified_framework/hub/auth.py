"""The hub's development login: any password, but only for people's own accounts.

``scripts/hub start --dev`` selects :class:`DevAuthenticator` on the JupyterHub command
line (``--JupyterHub.authenticator_class=...``); no environment variable or setting in
``hub_config/jupyterhub_config.py`` does, so a stray variable cannot switch a hub to it.
Because the hub submits each user's server as a SLURM job *of that account*, a login that
accepts any password must not reach service accounts (``daemon``, ``www-data``,
``slurm``, ...): it refuses every account below :data:`MIN_UID` or without a login
shell, and warns in the hub's log when it is loaded.
"""

from __future__ import annotations

import pwd
from pathlib import Path

from jupyterhub.auth import DummyAuthenticator

#: Lowest uid of a person's account (Debian's UID_MIN); system accounts are below it.
MIN_UID = 1000
#: Shells that mean "no login" even where /etc/shells lists them.
NO_LOGIN_SHELLS = frozenset({"nologin", "false"})


def login_shells(path: str | Path = "/etc/shells") -> frozenset[str]:
    """The login shells listed in ``/etc/shells`` (empty when the file is missing)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )


def service_account_reason(username: str, shells: frozenset[str] | None = None) -> str:
    """Why ``username`` is not a person's local account, or "" when it is one.

    A person's account exists, has a uid of at least :data:`MIN_UID` and a login shell
    (listed in ``/etc/shells``, not ``nologin``/``false``).

    Examples
    --------
    >>> service_account_reason("root")
    'uid 0 is below 1000 (a system account)'
    >>> service_account_reason("nobody")
    'shell /usr/sbin/nologin is not a login shell'
    """
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return "no such local account"
    if entry.pw_uid < MIN_UID:
        return f"uid {entry.pw_uid} is below {MIN_UID} (a system account)"
    shells = login_shells() if shells is None else shells
    shell = entry.pw_shell
    if not shell or Path(shell).name in NO_LOGIN_SHELLS or (shells and shell not in shells):
        return f"shell {shell or '(none)'} is not a login shell"
    return ""


class DevAuthenticator(DummyAuthenticator):
    """DummyAuthenticator (any password) for people's local accounts only; development use.

    Selected only by ``scripts/hub start --dev``. Logs a warning when the hub loads it.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log.warning(
            "DEVELOPMENT LOGIN (scripts/hub start --dev): any password logs in as any local account "
            "with uid >= %d and a login shell. Never expose this hub to other people.",
            MIN_UID,
        )

    async def authenticate(self, handler, data):
        """Accept any password for a person's account; refuse service accounts."""
        username = await super().authenticate(handler, data)
        if username is None:
            return None
        reason = service_account_reason(self.normalize_username(username))
        if reason:
            self.log.warning("development login refused for %r: %s", username, reason)
            return None
        return username
