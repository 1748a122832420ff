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
