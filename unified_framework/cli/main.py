"""Entry point of the ``mdlma`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from .. import __version__
from ..errors import MDLMAError, describe_os_error
from ..utils.text import printable

logger = logging.getLogger(__name__)


class _PrintableFormatter(logging.Formatter):
    """Log lines whose message cannot span lines or hold terminal escapes (names come from files)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def build_parser() -> argparse.ArgumentParser:
    """Create the top-level parser with one sub-command per verb module."""
    parser = argparse.ArgumentParser(
        prog="mdlma",
        description="MDLMA unified framework: volume I/O, scoring, segmentation and HPC workflows.",
    )
    parser.add_argument("--version", action="version", version=f"mdlma {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    from . import __path__ as cli_path

    for module_info in sorted(pkgutil.iter_modules(cli_path), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name == "main":
            continue
        module = importlib.import_module(f"{__package__}.{module_info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mdlma`` with ``argv`` and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        handlers=[handler],
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.verb is None else 2
    try:
        return int(args.func(args) or 0)
    except MDLMAError as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # `mdlma ... | head` closed the pipe: not an error. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A file or folder the user named cannot be read or written (permissions, a full
        # or read-only disk, a name too long) where no reader or writer put it in words.
        logger.debug("%s", exc, exc_info=True)
        return _error(describe_os_error(exc))
    except KeyboardInterrupt:
        print("mdlma: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> int:
    """Print ``message`` as the one-line ``mdlma: error:`` and return exit status 2."""
    print(f"mdlma: error: {printable(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
