"""Render a template's batch scripts with every value quoted for the shell.

The Jinja environment is sandboxed, undefined names are errors, and *every* ``{{ }}``
expression is passed through :func:`shlex.quote` on its way out (lists become
space-separated quoted words), so there is no way for a template to print a value
unquoted. Template authors therefore write ``cd -- {{ workdir }}`` — never put an
expression inside quotes of their own. A final check refuses any output whose
``#SBATCH`` lines carry something other than plain words.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ..errors import InputError
from .templates import Template, shared_folders

#: A directive line as SLURM reads it: option, optionally '=' and a value of plain characters.
SBATCH_LINE_RE = re.compile(r"#SBATCH --[a-z][a-z-]*(=[A-Za-z0-9_.:,%@+=/-]+)?")


@dataclass(frozen=True)
class RenderedJob:
    """One rendered batch script of a template."""

    step: str
    script_name: str
    text: str
    after: str | None = None

    @property
    def directives(self) -> list[str]:
        """The ``#SBATCH`` lines."""
        return [line for line in self.text.splitlines() if line.startswith("#SBATCH")]


def shell_quote(value: Any) -> str:
    """How any ``{{ value }}`` is printed: one shell word per item, quoted when needed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(item)) for item in value)
    return shlex.quote(str(value))


@functools.lru_cache(maxsize=64)
def _environment(folder: Path) -> SandboxedEnvironment:
    # One per template folder: Jinja then compiles each script once (a dashboard renders
    # on every change of a form field); its loader still reloads files that changed.
    loader = jinja2.FileSystemLoader([str(folder), *map(str, shared_folders(folder))])
    return SandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        finalize=shell_quote,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    template: Template, values: Mapping[str, Any], context: Mapping[str, Any] | None = None
) -> list[RenderedJob]:
    """Render every job script of ``template``.

    Parameters
    ----------
    template : Template
        The loaded template.
    values : mapping
        Parameters as returned by :func:`~.validation.validate_params` (never raw input).
    context : mapping, optional
        Extra names for the scripts, e.g. ``mdlma`` (module name, install prefix,
        modulepath, record folder) supplied by :mod:`.jobs`.

    Raises
    ------
    InputError
        A name the template uses is undefined, or a rendered ``#SBATCH`` line is not plain.
    """
    env = _environment(template.path)
    names = {**dict(context or {}), **dict(values)}
    jobs = []
    for step in template.steps:
        try:
            text = env.get_template(step.script).render(**names)
        except jinja2.UndefinedError as exc:
            raise InputError(f"{template.name}/{step.script}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise InputError(f"{template.name}/{step.script}: template error: {exc}") from None
        check_rendered(template, step.script, text)
        jobs.append(RenderedJob(step.name, step.script, text, step.after))
    return jobs


def check_rendered(template: Template, script: str, text: str) -> None:
    """Refuse a rendered script with NUL bytes or with ``#SBATCH`` lines that are not plain.

    Also checks that rendering added no directive: the output has at most as many
    ``#SBATCH`` lines as the template source (where the shared resource header is
    written out, see :attr:`.Template.sources`).
    """
    where = f"{template.name}/{script}"
    if "\x00" in text:
        raise InputError(f"{where}: the rendered script contains a NUL byte")
    directives = [line for line in text.splitlines() if line.lstrip().startswith("#SBATCH")]
    for line in directives:
        if not SBATCH_LINE_RE.fullmatch(line):
            raise InputError(
                f"{where}: refusing directive {line[:80]!r}: values in #SBATCH lines must be plain words"
            )
    source = template.sources.get(script, "")
    if len(directives) > sum(
        1 for line in source.splitlines() if line.lstrip().startswith("#SBATCH")
    ):
        raise InputError(f"{where}: rendering added #SBATCH directives")
