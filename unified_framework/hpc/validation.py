"""Check user parameters against a template's ``form.yml`` before anything is rendered.

Every value is checked for its type; text of any kind is refused if it holds control
characters (NUL, newlines, escape sequences) or line/paragraph separators, so nothing a
user types can start a new line of a batch script. Values that end up in ``#SBATCH``
lines (job names, partitions, times, memory, array specs, ...) must match strict
patterns; free text and paths are allowed any other character because the renderer
quotes them for the shell. Partitions, QoS, CPUs, memory, time and GPUs are checked
against the cluster when its limits are given.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shlex
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .slurm import Partition, parse_duration, parse_memory_mb
from .templates import Parameter, Template

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SLURM_WORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
TIME_RE = re.compile(
    r"\d{1,6}|\d{1,6}:\d{1,2}|\d{1,6}:\d{1,2}:\d{1,2}|\d{1,4}-\d{1,2}(:\d{1,2}(:\d{1,2})?)?"
)
MEMORY_RE = re.compile(r"(\d{1,9})([KMGT]?)B?", re.IGNORECASE)
ARRAY_RE = re.compile(r"\d{1,7}(-\d{1,7}(:\d{1,7})?)?(,\d{1,7}(-\d{1,7}(:\d{1,7})?)?)*(%\d{1,5})?")
MODULE_RE = re.compile(
    r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,127}(/[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,127}){0,7}"
)
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")
DEFAULT_MAX_LENGTH = {"string": 1024, "args": 8192, "path": 4096}
MAX_ARRAY_TASKS = 10000
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class ClusterLimits:
    """What the cluster offers, for checks against partitions, QoS, CPUs, memory, GPUs."""

    partitions: dict[str, Partition]
    qos: tuple[str, ...] | None = None

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return (
        text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(str(value))} chars)"
    )


#: Unicode's categories Cc (controls: C0, DEL, C1), Cs (surrogates), Zl and Zp (the line and
#: paragraph separators), as one character class: forms are checked on every keystroke and
#: the hostile-value tests a million times, and this is 20 times faster than asking
#: ``unicodedata.category`` for each character (a test compares the two on every code point).
_REFUSED_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def check_text(value: Any, field: str, max_length: int = 1024) -> str:
    """Return ``value`` if it is a string without control characters, else raise.

    Refuses NUL, newlines, carriage returns, escape sequences and every other control
    character, Unicode line/paragraph separators, lone surrogates, and text longer
    than ``max_length`` characters.
    """
    if not isinstance(value, str):
        raise InputError(f"{field}: expected text, got {type(value).__name__}")
    if len(value) > max_length:
        raise InputError(f"{field}: {len(value)} characters is too long (at most {max_length})")
    refused = _REFUSED_CHARACTER.search(value)
    if refused:
        raise InputError(
            f"{field}: control character U+{ord(refused.group()):04X} at position {refused.start()} "
            "is not allowed (no newlines, NUL or escape sequences)"
        )
    return value


def check_partition(value: Any, field: str = "partition", kind: str = "partition") -> str:
    """Return a SLURM partition (or QoS, account) name, cleaned, or raise.

    The value is checked *before* surrounding blanks are stripped, so a newline or
    any other control character is refused wherever it is; the stripped name must
    then be 1-64 of ``A-Za-z0-9_.-`` starting with a letter, digit or ``_``. Empty
    text is returned as ``""`` (the cluster's default); callers that need a name
    check for that. Pass on only the returned value.

    Parameters
    ----------
    value : Any
        What the user sent (text; form fields as a string).
    field : str
        What to name in the error message.
    kind : str
        ``partition``, ``qos`` or ``account`` (for the message).

    Returns
    -------
    str
        The name without surrounding blanks.

    Raises
    ------
    InputError
        Not text, control characters, or not a valid name.

    Examples
    --------
    >>> check_partition(" debug ")
    'debug'
    >>> check_partition("debug\\n#SBATCH --uid=0")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: partition: control character U+000A at position 5 is not allowed (no newlines, NUL or escape sequences)
    """
    text = check_text(_as_text(value), field, 256).strip(" ")
    if text and not SLURM_WORD_RE.fullmatch(text):
        raise InputError(
            f"{field}: {_shown(text)} is not a valid {kind} name (letters, digits, '_', '.', '-')"
        )
    return text


def check_module(value: Any, field: str = "module") -> str:
    """Return an Lmod module name (``name`` or ``name/version``), cleaned, or raise.

    Like :func:`check_partition`: control characters are refused before surrounding
    blanks are stripped. Each ``/``-separated part is 1-128 of ``A-Za-z0-9_.+-``
    and must not start with ``.`` or ``-`` (no ``..``, no options). Whether the
    module exists is the caller's check.

    Parameters
    ----------
    value : Any
        What the user sent.
    field : str
        What to name in the error message.

    Returns
    -------
    str
        The module name without surrounding blanks.

    Raises
    ------
    InputError
        Not text, empty, control characters, or not a module name.

    Examples
    --------
    >>> check_module("mdlma/unified-framework ")
    'mdlma/unified-framework'
    """
    text = check_text(_as_text(value), field, 512).strip(" ")
    if not MODULE_RE.fullmatch(text):
        raise InputError(
            f"{field}: {_shown(text)} is not a module name (NAME or NAME/VERSION of letters, digits, '_', '.', '+', '-')"
        )
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{field}: expected a whole number, got {_shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = check_text(_as_text(value), field, 32).strip()
    if not re.fullmatch(r"[+-]?\d{1,18}", text):
        raise InputError(f"{field}: expected a whole number, got {_shown(value)}")
    return int(text)


def _as_float(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{field}: expected a number, got {_shown(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = check_text(_as_text(value), field, 64).strip()
        try:
            number = float(text)
        except ValueError:
            raise InputError(f"{field}: expected a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise InputError(f"{field}: expected a finite number, got {_shown(value)}")
    return number


def _check_range(number: float, p: Parameter, field: str, shown: Any = None) -> None:
    shown = number if shown is None else shown
    if p.min is not None and number < p.min:
        raise InputError(f"{field}: {shown} is below the minimum {p.min}")
    if p.max is not None and number > p.max:
        raise InputError(f"{field}: {shown} is above the maximum {p.max}")


def time_seconds(text: str) -> float:
    """Seconds of a validated ``#SBATCH --time`` value (a bare number is minutes)."""
    return parse_duration(text) or 0.0


@dataclass(frozen=True)
class _Field:
    """Where a value is checked: the name in messages, the job's folder, path checks on/off."""

    name: str
    workdir: Path | None
    check_paths: bool


def _text_of(p: Parameter, value: Any, field: str) -> str:
    """The value as text without control characters, at most the type's length."""
    return check_text(_as_text(value), field, p.max_length or DEFAULT_MAX_LENGTH.get(p.type, 256))


def _check_int(p: Parameter, value: Any, at: _Field) -> int:
    number = _as_int(value, at.name)
    _check_range(number, p, at.name)
    return number


def _check_count(p: Parameter, value: Any, at: _Field) -> int:
    """CPUs (at least 1) or GPUs (at least 0)."""
    number = _as_int(value, at.name)
    if number < (1 if p.type == "cpus" else 0):
        raise InputError(f"{at.name}: {number} {p.type} is not possible")
    _check_range(number, p, at.name)
    return number


def _check_float(p: Parameter, value: Any, at: _Field) -> float:
    number = _as_float(value, at.name)
    _check_range(number, p, at.name)
    return number


def _check_bool(p: Parameter, value: Any, at: _Field) -> bool:
    if isinstance(value, bool):
        return value
    text = check_text(_as_text(value), at.name, 8).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{at.name}: expected true or false, got {_shown(value)}")


def _check_choice(p: Parameter, value: Any, at: _Field) -> Any:
    for choice in p.choices:
        if value == choice or _as_text(value) == _as_text(choice):
            return choice
    raise InputError(f"{at.name}: {_shown(value)} is not one of {', '.join(map(str, p.choices))}")


def _check_name(p: Parameter, value: Any, at: _Field) -> str:
    text = _text_of(p, value, at.name)
    if not NAME_RE.fullmatch(text):
        raise InputError(
            f"{at.name}: {_shown(text)} is not a valid name; use 1-64 letters, digits, '.', '_', '+', '-' "
            "starting with a letter or digit"
        )
    return text


def _check_slurm_word(p: Parameter, value: Any, at: _Field) -> str:
    """Partition, QoS or account name."""
    return check_partition(_text_of(p, value, at.name), at.name, p.type)


def _check_time(p: Parameter, value: Any, at: _Field) -> str:
    field = at.name
    text = _text_of(p, value, field).strip()
    if not TIME_RE.fullmatch(text):
        raise InputError(
            f"{field}: {_shown(text)} is not a SLURM time; use MINUTES, HH:MM:SS or DAYS-HH:MM:SS"
        )
    seconds = time_seconds(text)
    if seconds <= 0:
        raise InputError(f"{field}: the time limit must be positive")
    for bound, compare, word in (
        (p.min, seconds.__lt__, "below the minimum"),
        (p.max, seconds.__gt__, "above the maximum"),
    ):
        if bound is not None and compare(time_seconds(str(bound))):
            raise InputError(f"{field}: {text} is {word} {bound}")
    return text


def _check_memory(p: Parameter, value: Any, at: _Field) -> str:
    field = at.name
    text = _text_of(p, value, field)
    match = MEMORY_RE.fullmatch(text.strip())
    if not match:
        raise InputError(f"{field}: {_shown(text)} is not a memory size; use e.g. 500M, 4G, 1T")
    memory = f"{int(match.group(1))}{match.group(2).upper() or 'M'}"
    megabytes = parse_memory_mb(memory) or 0
    if megabytes <= 0:
        raise InputError(f"{field}: the memory size must be positive")
    for bound, word in ((p.min, "below the minimum"), (p.max, "above the maximum")):
        limit = parse_memory_mb(str(bound).upper().rstrip("B")) if bound is not None else None
        if limit is not None and (
            (megabytes < limit) if word.startswith("below") else (megabytes > limit)
        ):
            raise InputError(f"{field}: {memory} is {word} {bound}")
    return memory


def _check_array(p: Parameter, value: Any, at: _Field) -> str:
    field = at.name
    text = _text_of(p, value, field).strip()
    if not text:
        return ""
    if not ARRAY_RE.fullmatch(text):
        raise InputError(
            f"{field}: {_shown(text)} is not a SLURM array spec; use e.g. 0-9, 1,3,5 or 0-99%10"
        )
    if len(array_indices(text, field)) > MAX_ARRAY_TASKS:
        raise InputError(f"{field}: at most {MAX_ARRAY_TASKS} array tasks")
    return text


def _check_module(p: Parameter, value: Any, at: _Field) -> str:
    """An Lmod module name, or empty; narrowed to the parameter's choices when it has any."""
    text = _text_of(p, value, at.name)
    if not text.strip(" "):
        return ""
    module = check_module(text, at.name)
    if p.choices and module not in p.choices:
        raise InputError(
            f"{at.name}: {_shown(module)} is not one of {', '.join(map(str, p.choices))}"
        )
    return module


def _check_host(p: Parameter, value: Any, at: _Field) -> str:
    text = _text_of(p, value, at.name)
    if text and not HOST_RE.fullmatch(text):
        raise InputError(f"{at.name}: {_shown(text)} is not a host name or IP address")
    return text


def _check_string(p: Parameter, value: Any, at: _Field) -> str:
    text = _text_of(p, value, at.name)
    if p.pattern and not re.fullmatch(p.pattern, text):
        raise InputError(f"{at.name}: {_shown(text)} does not match the required form {p.pattern}")
    return text


def _check_args(p: Parameter, value: Any, at: _Field) -> list[str]:
    """A list of arguments as given, or text split like the shell does."""
    if isinstance(value, (list, tuple)):
        limit = p.max_length or DEFAULT_MAX_LENGTH["args"]
        return [check_text(_as_text(v), at.name, limit) for v in value]
    text = _text_of(p, value, at.name)
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InputError(
            f"{at.name}: cannot split into arguments ({exc}); check the quotes"
        ) from None


def _check_path_value(p: Parameter, value: Any, at: _Field) -> str:
    return _validate_path(p, _text_of(p, value, at.name), at.name, at.workdir, at.check_paths)


#: One validator per parameter type (``form.yml``'s ``type:``): raw value in, checked value out.
VALIDATORS: dict[str, Callable[[Parameter, Any, _Field], Any]] = {
    "int": _check_int,
    "cpus": _check_count,
    "gpus": _check_count,
    "float": _check_float,
    "bool": _check_bool,
    "choice": _check_choice,
    "name": _check_name,
    "partition": _check_slurm_word,
    "qos": _check_slurm_word,
    "account": _check_slurm_word,
    "time": _check_time,
    "memory": _check_memory,
    "array": _check_array,
    "module": _check_module,
    "host": _check_host,
    "string": _check_string,
    "args": _check_args,
    "path": _check_path_value,
}


def _validate_one(
    p: Parameter, value: Any, field: str, workdir: Path | None, check_paths: bool
) -> Any:
    validator = VALIDATORS.get(p.type)
    if validator is None:  # templates.py forbids this
        raise InputError(f"{field}: unknown parameter type {p.type!r}")
    return validator(p, value, _Field(field, workdir, check_paths))


def _validate_path(
    p: Parameter, text: str, field: str, workdir: Path | None, check_paths: bool
) -> str:
    if not text:
        # A path with a default (workdir '.') cannot be emptied: 'cd -- ""' would stay anywhere.
        if p.required or p.default:
            raise InputError(
                f"{field}: a path is required" + (f" (default {p.default})" if p.default else "")
            )
        return ""
    if "::" in text:
        # 'file.h5::/dataset': the framework's readers name a dataset inside a file.
        file_part, _, dataset = text.partition("::")
        return _validate_path(p, file_part, field, workdir, check_paths) + "::" + dataset
    # os.path on text rather than pathlib: the same result, several times faster.
    path = os.path.expanduser(text) if text.startswith("~") else text
    if not os.path.isabs(path):
        path = os.path.join(workdir or os.getcwd(), path)
    path = os.path.normpath(path)
    if not check_paths:
        return path
    try:
        _check_path(p, path, field)
    except OSError as exc:  # name too long, too many links, ...
        raise InputError(f"{field}: cannot use {_shown(path, 80)}: {exc.strerror}") from None
    return path


#: What pathlib's ``exists()`` and ``is_dir()`` take for "not there"; other errors (a name too
#: long, no permission to look) are raised.
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _mode_of(path: str) -> int | None:
    """The file's ``st_mode``, or None where it does not exist; one ``stat`` call."""
    try:
        return os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise


def _check_path(p: Parameter, path: str, field: str) -> None:
    wanted = {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}
    mode = _mode_of(path)
    if mode is not None:
        if p.kind == "file" and not stat.S_ISREG(mode):
            raise InputError(f"{field}: {path} is not a file")
        if p.kind == "dir" and not stat.S_ISDIR(mode):
            raise InputError(f"{field}: {path} is not a directory")
        for letter in p.access:
            if not os.access(path, wanted[letter]):
                raise InputError(
                    f"{field}: {path} is not {dict(r='readable', w='writable', x='executable')[letter]}"
                )
    elif p.exists:
        raise InputError(f"{field}: {path} does not exist")
    else:
        # An output still to be made: its folder must exist and be writable.
        parent = os.path.dirname(path)
        parent_mode = _mode_of(parent)
        if parent_mode is None or not stat.S_ISDIR(parent_mode):
            raise InputError(f"{field}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{field}: folder {parent} is not writable")


def array_indices(spec: str, field: str = "array") -> list[int]:
    """Task ids of a validated array spec (``0-9:2,15%4`` -> 0, 2, 4, 6, 8, 15)."""
    spec = spec.split("%")[0]
    indices: list[int] = []
    for part in filter(None, spec.split(",")):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        start, stop = int(first), int(last or first)
        if stop < start:
            raise InputError(f"{field}: range {part} runs backwards")
        indices.extend(range(start, stop + 1, int(step or 1) or 1))
        if len(indices) > MAX_ARRAY_TASKS:
            break
    return indices


def validate_params(
    template: Template,
    values: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    cluster: ClusterLimits | None = None,
    allow_locked: bool = False,
    check_paths: bool = True,
) -> dict[str, Any]:
    """Validate and complete a template's parameters.

    Parameters
    ----------
    template : Template
        The template whose ``form.yml`` defines the parameters.
    values : mapping, optional
        What the user set; missing parameters take their default.
    cwd : path-like, optional
        Where a relative ``workdir`` starts (default: the current directory). Other
        relative paths are taken relative to the validated ``workdir``.
    cluster : ClusterLimits, optional
        Check partition, QoS, CPUs, memory, time and GPUs against the cluster.
    allow_locked : bool
        Let the caller (an administrator's tool such as the hub) change locked values.
    check_paths : bool
        Check existence and permissions of paths (off only to render for another machine).

    Returns
    -------
    dict
        Every parameter with its validated value: numbers as numbers, paths absolute,
        memory normalised (``4G``), ``args`` as a list of strings.

    Raises
    ------
    InputError
        The first problem found, naming the template and the parameter; its
        ``field`` is the parameter's name (:func:`form_errors` gives every problem).

    Examples
    --------
    >>> from unified_framework.hpc import load_template
    >>> template = load_template("python-script")
    >>> validate_params(template, {"script": "run.py", "mem": "2g"}, cwd="/tmp", check_paths=False)["mem"]
    '2G'
    """
    result, errors = _check_all(template, values, cwd, cluster, allow_locked, check_paths)
    if errors:
        raise errors[0]
    return result


def form_errors(
    template: Template,
    values: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    cluster: ClusterLimits | None = None,
    allow_locked: bool = False,
    check_paths: bool = True,
) -> dict[str, InputError]:
    """Every problem of a form at once, by parameter: what a form shows under its widgets.

    Takes the arguments of :func:`validate_params`, checks every parameter in one pass
    (the cluster's limits for those that are valid) and returns the first problem of
    each. An empty result means :func:`validate_params` accepts the values.

    Returns
    -------
    dict
        Parameter name -> its :class:`InputError` (whose ``field`` is that name);
        a problem about no single parameter is under ``""``.

    Examples
    --------
    >>> from unified_framework.hpc import load_template
    >>> template = load_template("python-script")
    >>> errors = form_errors(template, {"mem": "lots", "cpus": 0}, cwd="/tmp", check_paths=False)
    >>> sorted(errors), errors["mem"].field
    (['cpus', 'mem', 'script'], 'mem')
    """
    found: dict[str, InputError] = {}
    for error in _check_all(template, values, cwd, cluster, allow_locked, check_paths)[1]:
        found.setdefault(error.field or "", error)
    return found


def _check_all(
    template: Template,
    values: Mapping[str, Any] | None,
    cwd: str | os.PathLike | None,
    cluster: ClusterLimits | None,
    allow_locked: bool,
    check_paths: bool,
) -> tuple[dict[str, Any], list[InputError]]:
    """The valid values and every problem, in the order :func:`validate_params` reports them."""
    values = dict(values or {})
    errors: list[InputError] = []
    for name in sorted(set(values) - set(template.parameters)):
        errors.append(
            InputError(
                f"{template.name}: unknown parameter {name!r}; expected one of {', '.join(template.parameters)}",
                field=name,
            )
        )
        del values[name]
    for name, value in list(values.items()):
        p = template.parameters[name]
        if (
            p.locked
            and not allow_locked
            and value != p.default
            and _as_text(value) != _as_text(p.default)
        ):
            errors.append(
                InputError(
                    f"{template.name}: {name} is locked by the administrator (fixed to {p.default!r})",
                    field=name,
                )
            )
            del values[
                name
            ]  # the locked value is what counts; nothing more to say about this field

    result: dict[str, Any] = {}
    # workdir first: other relative paths are relative to it (to cwd if it is invalid).
    order = ["workdir"] + [n for n in template.parameters if n != "workdir"]
    workdir = Path(cwd) if cwd else Path.cwd()
    for name in order:
        p = template.parameters[name]
        value = values.get(name, p.default)
        field = f"{template.name}: {name}"
        if value is None:
            value = ""
        try:
            checked = _validate_one(p, value, field, workdir, check_paths)
            if p.required and checked in ("", [], None):
                raise InputError(f"{field}: a value is required ({p.help})")
        except InputError as exc:
            # The helpers name the field in the message only; the form needs its name too.
            exc.field = exc.field or name
            errors.append(exc)
            continue
        result[name] = checked
        if name == "workdir":
            workdir = Path(checked)
    if cluster is not None:
        errors.extend(_cluster_errors(template, result, cluster))
    return result, errors


def _cluster_errors(
    template: Template, values: dict[str, Any], cluster: ClusterLimits
) -> list[InputError]:
    """Problems of the valid ``values`` with partition, QoS, time, CPUs, memory and GPUs of the cluster."""
    by_type = {p.type: name for name, p in reversed(list(template.parameters.items()))}
    partition_field = by_type.get("partition")
    name = values.get(partition_field or "", "") or cluster.default_partition
    if name and name not in cluster.partitions:
        return [
            InputError(
                f"{template.name}: partition {name!r} does not exist here; available: {', '.join(cluster.partitions)}",
                field=partition_field,
            )
        ]
    errors: list[InputError] = []
    partition = cluster.partitions.get(name) if name else None
    qos = values.get(by_type.get("qos", ""), "")
    if qos and cluster.qos is not None and qos not in cluster.qos:
        errors.append(
            InputError(
                f"{template.name}: QoS {qos!r} does not exist here; available: {', '.join(cluster.qos)}",
                field=by_type["qos"],
            )
        )
    if partition is None:
        return errors
    if not partition.available:
        errors.append(
            InputError(
                f"{template.name}: partition {partition.name!r} is not available (down or inactive)",
                field=partition_field,
            )
        )
        return errors
    for pname, p in template.parameters.items():
        value = values.get(pname)
        if p.type == "time" and value and time_seconds(value) > partition.max_time_s:
            errors.append(
                InputError(
                    f"{template.name}: {pname} {value} exceeds partition {partition.name!r}'s limit {partition.max_time}",
                    field=pname,
                )
            )
        if (
            p.type == "cpus"
            and value
            and partition.max_cpus_per_node
            and value > partition.max_cpus_per_node
        ):
            errors.append(
                InputError(
                    f"{template.name}: {pname} {value} exceeds the {partition.max_cpus_per_node} CPUs of a node "
                    f"in partition {partition.name!r}",
                    field=pname,
                )
            )
        if p.type == "memory" and value and partition.max_memory_mb_per_node:
            if (parse_memory_mb(value) or 0) > partition.max_memory_mb_per_node:
                errors.append(
                    InputError(
                        f"{template.name}: {pname} {value} exceeds the {partition.max_memory_mb_per_node:.0f} MB of a "
                        f"node in partition {partition.name!r}",
                        field=pname,
                    )
                )
        if p.type == "gpus" and value and value > partition.max_gpus_per_node:
            offered = (
                f"at most {partition.max_gpus_per_node} per node"
                if partition.max_gpus_per_node
                else "no GPUs"
            )
            errors.append(
                InputError(
                    f"{template.name}: {pname}={value} but partition {partition.name!r} has {offered}",
                    field=pname,
                )
            )
    return errors
