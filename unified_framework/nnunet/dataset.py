"""Volumes and labels in any readable format → an ``nnUNet_raw`` dataset.

nnU-Net v2's raw layout (``DatasetXXX_Name/imagesTr/<case>_<channel>.nii.gz``,
``labelsTr/<case>.nii.gz`` and ``dataset.json``) written through the framework's io
layer: the voxel size (and origin, direction) of every volume goes into its NIfTI
header, where nnU-Net's SimpleITK reader finds it. The labels are checked as nnU-Net
would check them, but up front and with one line naming the file: integers (or floats
holding integers), values ``0 .. classes - 1``, every channel present with the labels'
shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path
from .paths import NnUNetPaths

FILE_ENDING = ".nii.gz"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class Case:
    """One training case: one file per channel and its label volume."""

    images: list[Path]
    labels: Path | None = None
    name: str = ""


@dataclass
class ExportResult:
    """What :func:`export_dataset` wrote."""

    folder: Path
    dataset_name: str
    dataset_json: dict
    cases: list[str] = field(default_factory=list)


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_Name``.

    Examples
    --------
    >>> dataset_name(7, "Implant")
    'Dataset007_Implant'
    """
    return f"Dataset{int(dataset_id):03d}_{name}"


def check_id_free(paths: NnUNetPaths, dataset_id: int, name: str, overwrite: bool) -> None:
    """Refuse a dataset id that another dataset name holds in any of nnU-Net's folders.

    nnU-Net finds datasets by id; two names with one id make every later call fail.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise InputError(f"dataset id {dataset_id}: expected 1 .. 999", field="dataset_id")
    if not _NAME.match(name):
        raise InputError(
            f"dataset name {name!r}: expected letters, digits, '_' or '-' (no spaces, at most 64)",
            field="name",
        )
    wanted = dataset_name(dataset_id, name)
    prefix = f"Dataset{int(dataset_id):03d}_"
    for folder in (paths.raw, paths.preprocessed, paths.results):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not entry.name.startswith(prefix):
                continue
            if entry.name != wanted:
                raise InputError(
                    f"dataset id {dataset_id}: already used by {entry} (another name); choose another id",
                    field="dataset_id",
                )
            if folder == paths.raw and not overwrite:
                raise InputError(
                    f"{entry}: exists already; use --overwrite to replace it", field="dataset_id"
                )


def label_values(labels: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The labels as an unsigned integer array and the values present.

    Raises
    ------
    InputError
        Not integers (floats holding fractions, booleans are fine), or negative.
    """
    kind = labels.dtype.kind
    if kind == "b":
        labels = labels.astype(np.uint8)
    elif kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(
                f"{path}: labels of dtype {labels.dtype} hold non-integer values; nnU-Net expects integer class labels 0, 1, 2 ..."
            )
    elif kind not in "iu":
        raise InputError(
            f"{path}: labels of dtype {labels.dtype}; nnU-Net expects integer class labels 0, 1, 2 ..."
        )
    values = np.unique(labels)
    if values.size and values[0] < 0:
        raise InputError(
            f"{path}: negative label {values[0]}; nnU-Net expects class labels 0, 1, 2 ..."
        )
    dtype = np.uint8 if (not values.size or values[-1] < 256) else np.uint16
    return labels.astype(dtype, copy=False), values.astype(np.int64)


def export_dataset(
    cases: Sequence[Case],
    paths: NnUNetPaths,
    dataset_id: int,
    name: str,
    *,
    channel_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    test_cases: Sequence[Case] = (),
    overwrite: bool = False,
    progress: bool = False,
) -> ExportResult:
    """Write an ``nnUNet_raw`` dataset from volumes in any format the io layer reads.

    Parameters
    ----------
    cases : sequence of Case
        Training cases (images, one per channel, and labels).
    paths : NnUNetPaths
        The user's nnU-Net folders (:func:`~unified_framework.nnunet.paths.nnunet_paths`).
    dataset_id : int
        1 .. 999; refused if another dataset name holds it.
    name : str
        Dataset name (letters, digits, ``_``, ``-``).
    channel_names : sequence of str, optional
        One per channel; ``CT`` selects nnU-Net's CT normalisation (clip to the
        foreground's percentiles, z-score with its statistics), other names a
        per-case z-score. Default ``CT`` for every channel.
    label_names : sequence of str, optional
        One per class ``0 .. n-1``; default ``background``, ``class_1`` ... for the
        values found.
    test_cases : sequence of Case
        Written to ``imagesTs`` (labels, if any, to ``labelsTs``).
    overwrite : bool
        Replace a dataset of the same id and name.
    progress : bool
        Show a progress bar.

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError
        Labels nnU-Net would reject, a missing channel, shapes that differ, an id clash.

    Examples
    --------
    >>> from unified_framework.nnunet.dataset import Case  # doctest: +SKIP
    >>> export_dataset([Case([Path("a.tif")], Path("a_labels.tif"))], paths, 501, "Implant")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from ..io import Volume, read_volume, write_volume

    if not cases:
        raise InputError("no training cases given; expected at least one --pair IMAGE LABELS")
    check_id_free(paths, dataset_id, name, overwrite)
    n_channels = len(cases[0].images)
    for case in [*cases, *test_cases]:
        if len(case.images) != n_channels:
            raise InputError(
                f"{case.images[0] if case.images else case.labels}: case has {len(case.images)} channel(s); "
                f"the first case has {n_channels} (every case needs every channel)"
            )
    channel_names = list(channel_names or ["CT"] * n_channels)
    if len(channel_names) != n_channels:
        raise InputError(
            f"channel names {channel_names}: {len(channel_names)} given for {n_channels} channel(s)",
            field="channel_names",
        )
    folder_name = dataset_name(dataset_id, name)
    final = paths.raw / folder_name
    seen: set[int] = set()
    written: list[str] = []
    with atomic_path(final) as tmp:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(parents=True)
        todo = [("Tr", i, c) for i, c in enumerate(cases)] + [
            ("Ts", i, c) for i, c in enumerate(test_cases)
        ]
        for part, index, case in tqdm(
            todo, desc="nnU-Net export", unit="case", disable=None if progress else True
        ):
            case_id = case.name or f"case_{index:03d}"
            if part == "Ts":
                case_id = case.name or f"test_{index:03d}"
            reference = None
            if case.labels is not None:
                label_volume = read_volume(case.labels, expect_ndim=3, grey=True)
                labels, values = label_values(np.asarray(label_volume.data), case.labels)
                if part == "Tr":
                    seen.update(int(v) for v in values)
                if label_names is not None and values.size and values[-1] >= len(label_names):
                    raise InputError(
                        f"{case.labels}: label {values[-1]} but only {len(label_names)} label names "
                        f"(classes 0 .. {len(label_names) - 1})"
                    )
                reference = label_volume
                sub = "labelsTr" if part == "Tr" else "labelsTs"
                (tmp / sub).mkdir(exist_ok=True)
                write_volume(
                    tmp / sub / f"{case_id}{FILE_ENDING}",
                    Volume(
                        labels,
                        label_volume.spacing,
                        origin=label_volume.origin,
                        direction=label_volume.direction,
                    ),
                )
            sub = "imagesTr" if part == "Tr" else "imagesTs"
            (tmp / sub).mkdir(exist_ok=True)
            for channel, image_path in enumerate(case.images):
                image = read_volume(image_path, expect_ndim=3, grey=True)
                if reference is not None and tuple(image.shape) != tuple(reference.shape):
                    raise InputError(
                        f"{image_path}: shape {tuple(image.shape)} differs from the labels' {tuple(reference.shape)} ({case.labels})"
                    )
                if reference is None:
                    reference = image
                write_volume(
                    tmp / sub / f"{case_id}_{channel:04d}{FILE_ENDING}",
                    Volume(
                        np.asarray(image.data),
                        image.spacing,
                        origin=image.origin,
                        direction=image.direction,
                    ),
                )
            written.append(case_id)
        present = sorted(seen)
        if label_names is None:
            if present != list(range(len(present))) or len(present) < 2:
                raise InputError(
                    f"labels: the training labels hold the values {present}; nnU-Net needs consecutive classes 0, 1, 2 ... "
                    "(relabel, or name every class with --label-names)"
                )
            label_names = ["background", *[f"class_{v}" for v in present[1:]]]
        if len(set(label_names)) != len(label_names):
            raise InputError(f"label names {list(label_names)}: must differ", field="label_names")
        dataset_json = {
            "channel_names": {str(i): n for i, n in enumerate(channel_names)},
            "labels": {n: i for i, n in enumerate(label_names)},
            "numTraining": len(cases),
            "file_ending": FILE_ENDING,
            "name": name,
            "description": "written by mdlma nnunet export",
            "mdlma_sources": {
                cid: {
                    "images": [str(p) for p in c.images],
                    "labels": str(c.labels) if c.labels else None,
                }
                for cid, c in zip(written, [*cases, *test_cases])
            },
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")
    return ExportResult(final, folder_name, dataset_json, written)
