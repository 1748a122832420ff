"""From a template's ``form.yml`` parameters to widget descriptions (no Streamlit here).

:func:`widget_spec` decides, per parameter, which widget shows it, with which options
and bounds; cluster-dependent choices (partitions, GPUs) come from the resource tables
of :mod:`.cluster`. The composer page turns the specs into widgets.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: Parameter type -> widget kind.
WIDGETS = {
    "int": "int",
    "cpus": "int",
    "float": "float",
    "bool": "bool",
    "choice": "select",
    "partition": "select",
    "gpus": "select",
    "qos": "text",
    "account": "text",
    "name": "text",
    "string": "text",
    "args": "text",
    "time": "text",
    "memory": "text",
    "array": "text",
    "host": "text",
    "path": "text",
}
#: Example values shown as placeholders of free-text parameters.
PLACEHOLDERS = {
    "time": "e.g. 01:30:00 or 2-00:00:00",
    "memory": "e.g. 4G or 500M",
    "array": "e.g. 0-9 or 1,3,5%2",
    "path": "an absolute path",
    "args": "extra arguments",
    "host": "node name",
}


@dataclass
class WidgetSpec:
    """How one parameter is shown."""

    name: str
    kind: str  # int, float, bool, select, text
    label: str
    help: str
    value: Any
    disabled: bool = False
    options: list = field(default_factory=list)
    min: Any = None
    max: Any = None
    placeholder: str = ""


def partition_options(partitions: pd.DataFrame | None) -> list[str]:
    """Partition names for a selectbox; "" (the cluster's default partition) first."""
    names = [] if partitions is None or partitions.empty else list(partitions["partition"])
    return ["", *names]


def gpu_options(nodes: pd.DataFrame | None, maximum: int | None = None) -> list[int]:
    """0 .. the most GPUs any node has (capped at ``maximum``)."""
    most = 0 if nodes is None or nodes.empty else int(nodes["gpus_total"].max())
    if maximum is not None:
        most = min(most, int(maximum))
    return list(range(0, most + 1))


def widget_spec(
    parameter, value: Any, partitions: pd.DataFrame | None = None, nodes: pd.DataFrame | None = None
) -> WidgetSpec:
    """The widget for one template parameter.

    Parameters
    ----------
    parameter : unified_framework.hpc.templates.Parameter
        From ``form.yml``.
    value : Any
        Current value (default, saved setting or copied job); locked parameters always
        show their default.
    partitions, nodes : pandas.DataFrame, optional
        Cluster tables (:func:`.cluster.partitions`, :func:`.cluster.nodes`) that fill
        the partition and GPU choices.
    """
    kind = WIDGETS.get(parameter.type, "text")
    value = parameter.default if parameter.locked else value
    spec = WidgetSpec(
        name=parameter.name,
        kind=kind,
        label=parameter.label or parameter.name,
        help=parameter.help + (" (set by the administrator)" if parameter.locked else ""),
        value=value,
        disabled=parameter.locked,
        min=parameter.min,
        max=parameter.max,
        placeholder=PLACEHOLDERS.get(parameter.type, ""),
    )
    if parameter.type == "choice":
        spec.options = list(parameter.choices)
    elif parameter.type == "partition":
        spec.options = list(parameter.choices) or partition_options(partitions)
    elif parameter.type == "gpus":
        spec.options = gpu_options(nodes, parameter.max)
        if parameter.min:
            spec.options = [n for n in spec.options if n >= int(parameter.min)] or [
                int(parameter.min)
            ]
    if spec.kind == "select" and spec.value not in spec.options:
        # Keep an unexpected saved value visible so validation can explain it.
        spec.options = [spec.value, *spec.options]
    if spec.kind == "int":
        spec.value = _as_number(spec.value, int)
    elif spec.kind == "float":
        spec.value = _as_number(spec.value, float)
    elif spec.kind == "bool":
        spec.value = bool(spec.value)
    elif spec.kind == "text":
        if isinstance(spec.value, (list, tuple)):  # validated "args" come back as a list of words
            spec.value = shlex.join(str(v) for v in spec.value)
        spec.value = "" if spec.value is None else str(spec.value)
    return spec


def _as_number(value: Any, kind: type):
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def field_errors(
    template, values: Mapping[str, Any], *, cwd: str | None = None, cluster=None
) -> dict[str, str]:
    """Validate the form and return a message per invalid parameter (empty when all is well).

    One pass of :func:`unified_framework.hpc.form_errors`: every problem comes with the
    parameter it is about (``InputError.field``). The template's name is left out of
    the message (the page shows it once); a problem that names no parameter of the
    form is returned under the key ``""``.
    """
    from unified_framework.hpc import form_errors

    prefix = f"{template.name}: "
    errors: dict[str, str] = {}
    for name, error in form_errors(template, values, cwd=cwd, cluster=cluster).items():
        errors.setdefault(
            name if name in template.parameters else "", str(error).removeprefix(prefix)
        )
    return errors


def settings_file(template_name: str) -> Path:
    """Where the composer keeps a user's saved values of a template."""
    from unified_framework.config import config_path

    return config_path().parent / "dashboard" / f"{template_name}.json"


def save_settings(template, values: Mapping[str, Any]) -> Path:
    """Save the non-locked values of a template's form (atomically); returns the file."""
    from unified_framework.utils.atomic import write_text_atomic

    kept = {
        k: v
        for k, v in values.items()
        if k in template.parameters and not template.parameters[k].locked
    }
    return write_text_atomic(
        settings_file(template.name), json.dumps(kept, indent=2, default=str) + "\n"
    )


def load_settings(template) -> dict[str, Any]:
    """Saved values of a template that still exist as unlocked parameters ({} if none)."""
    try:
        saved = json.loads(settings_file(template.name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {
        k: v
        for k, v in saved.items()
        if k in template.parameters and not template.parameters[k].locked
    }


def initial_values(template, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid by each layer (saved settings, a copied job...), locked values kept."""
    values = template.defaults()
    for layer in layers:
        for name, value in (layer or {}).items():
            if name in template.parameters and not template.parameters[name].locked:
                values[name] = value
    return values
