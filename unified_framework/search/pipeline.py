"""Pipelines as YAML files: steps, their parameters and the search space of each parameter.

A pipeline is a list of steps run one after another on an image; each step's output is
the next one's input, the last one's a label image. Example (``docs/search.md``)::

    name: smooth-otsu
    steps:
      - step: denoise.gaussian
        params:
          sigma: {low: 0.3, high: 3.0, log: true}     # a float range on a log scale
      - step: segment.multi-otsu
        params:
          classes: 4                                  # a constant
      - step: post.remove-small
        params:
          min_size: {low: 0, high: 64, type: int}
      - step: command                                 # a legacy program, no shell
        command: [./legacy, "{input}", "{output}", --level, "{level}"]
        params:
          level: {choices: [1, 2, 3]}

Steps: ``denoise.<method>`` (:mod:`unified_framework.denoise`), ``segment.threshold``,
``segment.multi-otsu``, ``segment.watershed``, ``segment.random-walker``,
``sitk.<filter>`` (SimpleITK: ``median``, ``curvature-flow``, ``gradient-anisotropic``,
``otsu-multiple``), ``post.remove-small``, ``post.fill-holes``, ``post.opening``,
``post.closing`` and ``command``.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

# --- step functions --------------------------------------------------------------------


def _threshold(image: np.ndarray, method: str = "otsu") -> np.ndarray:
    from skimage import filters

    functions: dict[str, Callable[..., float]] = {
        "otsu": filters.threshold_otsu,
        "li": filters.threshold_li,
        "yen": filters.threshold_yen,
        "triangle": filters.threshold_triangle,
        "mean": filters.threshold_mean,
        "isodata": filters.threshold_isodata,
    }
    if method not in functions:
        raise InputError(
            f"method: expected one of {', '.join(functions)}, got {method!r}", field="method"
        )
    return (image > functions[method](image)).astype(np.uint8)


def _multi_otsu(image: np.ndarray, classes: int = 3, smoothing: float = 0.0) -> np.ndarray:
    from ..classical import multi_otsu

    return multi_otsu(image, classes=int(classes), smoothing=float(smoothing))


def _watershed(
    image: np.ndarray, classes: int = 3, smoothing: float = 1.0, marker_fraction: float = 0.5
) -> np.ndarray:
    from ..classical import watershed_classes

    return watershed_classes(
        image,
        classes=int(classes),
        smoothing=float(smoothing),
        marker_fraction=float(marker_fraction),
    )


def _random_walker(
    image: np.ndarray, classes: int = 3, beta: float = 130.0, marker_fraction: float = 0.3
) -> np.ndarray:
    """Random walker seeded, like the watershed, in the confident centre of each multi-Otsu class."""
    from skimage.filters import threshold_multiotsu
    from skimage.segmentation import random_walker

    data = image.astype(np.float64)
    thresholds = threshold_multiotsu(data, classes=int(classes))
    low, high = np.percentile(data, [0.5, 99.5])
    bounds = np.concatenate([[min(low, thresholds[0])], thresholds, [max(high, thresholds[-1])]])
    markers = np.zeros(data.shape, np.int32)
    for label in range(int(classes)):
        centre = (bounds[label] + bounds[label + 1]) / 2
        half = (bounds[label + 1] - bounds[label]) * float(marker_fraction) / 2
        markers[(data >= centre - half) & (data <= centre + half)] = label + 1
    span = float(data.max() - data.min()) or 1.0
    labels = random_walker((data - data.min()) / span, markers, beta=float(beta), mode="cg")
    return (labels - 1).astype(np.uint8)


def _sitk(name: str) -> Callable[..., np.ndarray]:
    def run(image: np.ndarray, **params: Any) -> np.ndarray:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(image.astype(np.float32))
        if name == "median":
            out = sitk.Median(img, [int(params.get("radius", 1))] * image.ndim)
        elif name == "curvature-flow":
            out = sitk.CurvatureFlow(
                img,
                timeStep=float(params.get("time_step", 0.0625)),
                numberOfIterations=int(params.get("iterations", 5)),
            )
        elif name == "gradient-anisotropic":
            out = sitk.GradientAnisotropicDiffusion(
                img,
                timeStep=float(params.get("time_step", 0.0625)),
                conductanceParameter=float(params.get("conductance", 1.0)),
                numberOfIterations=int(params.get("iterations", 5)),
            )
        else:  # otsu-multiple
            out = sitk.OtsuMultipleThresholds(
                img, numberOfThresholds=int(params.get("thresholds", 2))
            )
        return sitk.GetArrayFromImage(out)

    return run


_SITK_PARAMS: dict[str, dict[str, Any]] = {
    "median": {"radius": 1},
    "curvature-flow": {"time_step": 0.0625, "iterations": 5},
    "gradient-anisotropic": {"time_step": 0.0625, "conductance": 1.0, "iterations": 5},
    "otsu-multiple": {"thresholds": 2},
}


def _remove_small(labels: np.ndarray, min_size: int = 16) -> np.ndarray:
    """Give connected pieces smaller than ``min_size`` voxels the label of the surrounding majority."""
    from scipy import ndimage

    out = labels.copy()
    if int(min_size) <= 0:
        return out
    for value in np.unique(labels):
        pieces, count = ndimage.label(labels == value)
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())
        small = np.isin(pieces, np.flatnonzero(sizes < int(min_size))) & (pieces > 0)
        if small.any():
            # Fill from the nearest voxel that is not in a small piece.
            _, index = ndimage.distance_transform_edt(small, return_indices=True)
            out[small] = labels[tuple(i[small] for i in index)]
    return out


def _morphology(kind: str) -> Callable[..., np.ndarray]:
    def run(labels: np.ndarray, radius: int = 1, label: int = 1) -> np.ndarray:
        from scipy import ndimage

        mask = labels == int(label)
        structure = ndimage.generate_binary_structure(labels.ndim, 1)
        structure = ndimage.iterate_structure(structure, max(1, int(radius)))
        if kind == "opening":
            changed = ndimage.binary_opening(mask, structure)
        elif kind == "closing":
            changed = ndimage.binary_closing(mask, structure)
        else:
            changed = ndimage.binary_fill_holes(mask)
        out = labels.copy()
        out[mask & ~changed] = 0
        out[changed & ~mask] = int(label)
        return out

    return run


@dataclass(frozen=True)
class StepKind:
    """A kind of step: the function and its parameters with defaults."""

    name: str
    function: Callable[..., np.ndarray] | None
    params: dict[str, Any]
    makes_labels: bool = False


def _kinds() -> dict[str, StepKind]:
    from ..denoise import METHODS

    kinds: dict[str, StepKind] = {}
    for name, m in METHODS.items():
        kinds[f"denoise.{name}"] = StepKind(
            f"denoise.{name}",
            (lambda method: lambda image, **p: _denoise(image, method, p))(name),
            {k: p.default for k, p in m.params.items()},
        )
    functions: dict[str, Callable[..., np.ndarray]] = {
        "segment.threshold": _threshold,
        "segment.multi-otsu": _multi_otsu,
        "segment.watershed": _watershed,
        "segment.random-walker": _random_walker,
        "post.remove-small": _remove_small,
        "post.opening": _morphology("opening"),
        "post.closing": _morphology("closing"),
        "post.fill-holes": _morphology("fill-holes"),
    }
    for name, function in functions.items():
        defaults = {
            k: v.default for k, v in list(inspect.signature(function).parameters.items())[1:]
        }
        kinds[name] = StepKind(
            name, function, defaults, makes_labels=not name.startswith("denoise")
        )
    for name, sitk_defaults in _SITK_PARAMS.items():
        kinds[f"sitk.{name}"] = StepKind(
            f"sitk.{name}", _sitk(name), dict(sitk_defaults), makes_labels=name == "otsu-multiple"
        )
    kinds["command"] = StepKind("command", None, {})
    return kinds


def _denoise(image: np.ndarray, method: str, params: dict[str, Any]) -> np.ndarray:
    from ..denoise import denoise

    return denoise(image, method, params)


STEPS = _kinds()


# --- search space ------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """Where one parameter may range: ``choices``, or ``low``..``high`` (``log``, ``kind`` int/float)."""

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"
    step: float | None = None

    def grid(self, points: int) -> list[Any]:
        """Values for a grid search: the choices, or ``points`` values over the range."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.log:
            values = np.geomspace(self.low, self.high, points)
        else:
            values = np.linspace(self.low, self.high, points)
        if self.kind == "int":
            return sorted({int(round(v)) for v in values})
        return [float(v) for v in values]


@dataclass
class Step:
    """One step of a pipeline: its kind, constant parameters, searched parameters (and a command)."""

    name: str
    kind: str
    constants: dict[str, Any] = field(default_factory=dict)
    spaces: dict[str, Space] = field(default_factory=dict)
    command: list[str] | None = None


@dataclass
class Pipeline:
    """A loaded pipeline (see the module docstring); parameter names are ``<step name>.<parameter>``."""

    name: str
    steps: list[Step]
    metric: str = "dice"
    labels: list[int] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> dict[str, Space]:
        """Every searched parameter by its full name."""
        return {f"{s.name}.{k}": v for s in self.steps for k, v in s.spaces.items()}

    def run(
        self, image: np.ndarray, params: Mapping[str, Any], workdir: str | Path | None = None
    ) -> np.ndarray:
        """Run the steps on ``image`` with the searched ``params`` (full names); returns labels."""
        data = image
        for step in self.steps:
            values = dict(step.constants)
            for key in step.spaces:
                values[key] = params[f"{step.name}.{key}"]
            if step.kind == "command":
                assert step.command is not None
                data = run_command(step.command, data, values, workdir)
            else:
                function = STEPS[step.kind].function
                assert function is not None
                data = function(data, **values)
        return np.asarray(data)


def _space(where: str, spec: Any) -> Space:
    if not isinstance(spec, Mapping):
        raise InputError(
            f"{where}: expected a constant or a mapping with choices or low/high, got {spec!r}"
        )
    unknown = set(spec) - {"choices", "low", "high", "log", "type", "step"}
    if unknown:
        raise InputError(
            f"{where}: unknown keys {sorted(unknown)}; expected choices, low, high, log, type, step"
        )
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise InputError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        return Space(choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise InputError(f"{where}: a range needs both low and high")
    kind = str(
        spec.get(
            "type",
            "int"
            if isinstance(spec["low"], int)
            and isinstance(spec["high"], int)
            and not isinstance(spec["low"], bool)
            else "float",
        )
    )
    if kind not in ("int", "float"):
        raise InputError(f"{where}.type: expected int or float, got {kind!r}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: low and high must be numbers, got {spec['low']!r} and {spec['high']!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{where}: low and high must be finite")
    if low > high:
        raise InputError(
            f"{where}: range min {spec['low']} > max {spec['high']}; expected low <= high"
        )
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise InputError(f"{where}: a log-scale range needs low > 0, got {spec['low']}")
    step = spec.get("step")
    return Space(
        low=low, high=high, log=log, kind=kind, step=float(step) if step is not None else None
    )


def load_pipeline(source: str | Path | Mapping[str, Any]) -> Pipeline:
    """Load and check a pipeline from a YAML file (or an already parsed mapping).

    Raises
    ------
    InputError
        One line naming the file and the step or parameter: an unknown step or
        parameter, a range with min > max, a log range from 0 or below, a command that
        is not a list of strings.

    Examples
    --------
    >>> p = load_pipeline({"steps": [{"step": "denoise.gaussian", "params": {"sigma": {"low": 0.5, "high": 2}}},
    ...                              {"step": "segment.multi-otsu", "params": {"classes": 3}}]})
    >>> sorted(p.space)
    ['denoise.gaussian.sigma']
    """
    if isinstance(source, Mapping):
        where, data = "pipeline", dict(source)
    else:
        import yaml

        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{source}: no such pipeline file") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise InputError(f"{where}: expected a mapping with a non-empty 'steps' list")
    unknown = set(data) - {"name", "steps", "score", "description"}
    if unknown:
        raise InputError(
            f"{where}: unknown keys {sorted(unknown)}; expected name, description, steps, score"
        )
    steps: list[Step] = []
    seen: set[str] = set()
    for index, item in enumerate(data["steps"]):
        here = f"{where}: step {index + 1}"
        if not isinstance(item, dict) or "step" not in item:
            raise InputError(f"{here}: expected a mapping with 'step: KIND'")
        kind = str(item["step"])
        if kind not in STEPS:
            raise InputError(f"{here}: unknown step {kind!r}; expected one of {', '.join(STEPS)}")
        extra = set(item) - {"step", "name", "params", "command"}
        if extra:
            raise InputError(
                f"{here}: unknown keys {sorted(extra)}; expected step, name, params, command"
            )
        name = str(item.get("name") or kind)
        if name in seen:
            raise InputError(
                f"{here}: a second step named {name!r}; give each step its own 'name:'"
            )
        seen.add(name)
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise InputError(f"{here}: params must be a mapping")
        step = Step(name, kind)
        if kind == "command":
            command = item.get("command")
            if (
                not isinstance(command, list)
                or not command
                or not all(isinstance(c, (str, int, float)) for c in command)
            ):
                raise InputError(
                    f"{here}: command must be a list of strings (program and arguments; no shell)"
                )
            step.command = [str(c) for c in command]
            if not any("{output}" in c for c in step.command):
                raise InputError(
                    f"{here}: the command must write '{{output}}' (name it among its arguments)"
                )
        known = STEPS[kind].params
        for key, value in params.items():
            if kind != "command" and key not in known:
                raise InputError(
                    f"{here} ({kind}): unknown parameter {key!r}; expected one of {', '.join(known) or 'none'}"
                )
            if isinstance(value, Mapping):
                step.spaces[str(key)] = _space(f"{here}.{key}", value)
            else:
                step.constants[str(key)] = value
        steps.append(step)
    score = data.get("score") or {}
    metric = str(score.get("metric", "dice"))
    if metric not in ("dice", "iou", "f1"):
        raise InputError(f"{where}: score.metric: expected dice, iou or f1, got {metric!r}")
    labels = score.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(v, int) for v in labels)
    ):
        raise InputError(f"{where}: score.labels: expected a list of label numbers")
    if (
        not steps[-1].kind.startswith(("segment.", "post.", "command"))
        and not STEPS[steps[-1].kind].makes_labels
    ):
        raise InputError(
            f"{where}: the last step must produce labels (a segment.*, post.* or command step)"
        )
    return Pipeline(str(data.get("name") or Path(where).stem), steps, metric, labels, data)


def run_command(
    command: list[str], image: np.ndarray, values: Mapping[str, Any], workdir: str | Path | None
) -> np.ndarray:
    """Run a legacy program on files: the image written to ``{input}``, the labels read from ``{output}``.

    Arguments are a list passed to the program without a shell; ``{input}``,
    ``{output}`` and ``{<parameter>}`` in them are replaced (each value stays one
    argument, whatever characters it holds).
    """
    from ..io import read_volume, write_volume

    with tempfile.TemporaryDirectory(prefix="mdlma-step-", dir=workdir) as tmp:
        inp, out = Path(tmp) / "input.tif", Path(tmp) / "output.tif"
        write_volume(inp, np.asarray(image))
        mapping = {"input": str(inp), "output": str(out), **{k: str(v) for k, v in values.items()}}
        args = []
        for part in command:
            try:
                args.append(part.format_map(mapping))
            except (KeyError, ValueError, IndexError) as exc:
                raise InputError(
                    f"command: argument {part!r} names an unknown placeholder ({exc})"
                ) from None
        program = args[0]
        if os.sep not in program and not Path(program).exists():
            import shutil

            program = shutil.which(program) or program
        try:
            done = subprocess.run(
                [program, *args[1:]],
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
                cwd=tmp,
                timeout=3600,
            )
        except FileNotFoundError:
            raise InputError(f"command: program {args[0]!r} not found") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise InputError(
                f"command {Path(args[0]).name}: exit status {done.returncode}"
                + (f" ({lines[-1]})" if lines else "")
            )
        if not out.exists():
            raise InputError(f"command {Path(args[0]).name}: finished but wrote no {{output}}")
        return np.asarray(read_volume(out).data)
