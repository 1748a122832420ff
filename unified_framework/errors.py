"""Exception types shared by every part of the framework.

Every error a user can cause (bad file, bad parameter) is an :class:`InputError` whose
message is one line naming the file or field and what was expected; the CLI prints it
as ``mdlma: error: <message>`` and exits with status 2.
"""


class MDLMAError(Exception):
    """Base class of all errors raised on purpose by the framework."""


class InputError(MDLMAError, ValueError):
    """A file, array or parameter given by the user does not fit what was expected."""


class BackendUnavailable(MDLMAError, RuntimeError):
    """An optional backend (tomopy, SLURM, a GPU, ...) is needed but not installed."""


def describe_os_error(exc: OSError, names: bool = True) -> str:
    """One line naming the file of an :class:`OSError` (unless ``names`` is False) and what went wrong.

    Examples
    --------
    >>> describe_os_error(PermissionError(13, "Permission denied", "/data/scan.tif"))
    '/data/scan.tif: permission denied'
    """
    what = (exc.strerror or str(exc) or type(exc).__name__).strip()
    what = what[:1].lower() + what[1:]
    files = [str(name) for name in (exc.filename, exc.filename2) if name is not None] if names else []
    return f"{' -> '.join(files)}: {what}" if files else what
