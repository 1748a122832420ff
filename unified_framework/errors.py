"""Exception types shared by every part of the framework.

Every error a user can cause (bad file, bad parameter) is an :class:`InputError` whose
message is one line naming the file or field and what was expected; the CLI prints it
as ``mdlma: error: <message>`` and exits with status 2. An error about one parameter
of a form also carries that parameter's name in :attr:`InputError.field`, so a form can
show the message next to the right widget without reading the message.
"""

from __future__ import annotations


class MDLMAError(Exception):
    """Base class of all errors raised on purpose by the framework."""


class InputError(MDLMAError, ValueError):
    """A file, array or parameter given by the user does not fit what was expected.

    Parameters
    ----------
    message : str
        One line naming the file or field and what was expected.
    field : str, optional
        The parameter the error is about (a template parameter's name), if it is
        about one; None otherwise.

    Examples
    --------
    >>> error = InputError("python-script: mem: 9X is not a memory size", field="mem")
    >>> error.field, str(error)
    ('mem', 'python-script: mem: 9X is not a memory size')
    >>> InputError("data.tif: not a TIFF file").field is None
    True
    """

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        #: The parameter the error is about, or None.
        self.field = field


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
    files = (
        [str(name) for name in (exc.filename, exc.filename2) if name is not None] if names else []
    )
    return f"{' -> '.join(files)}: {what}" if files else what
