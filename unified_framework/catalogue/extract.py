"""Turn a volume on disk into a SciCat dataset record (dataset + OrigDatablock).

The record uses pyscicat's models, so what is ingested is exactly what SciCat accepts:
a ``RawDataset`` (or a ``DerivedDataset`` linked to its input datasets, for segmentation
and registration outputs) whose ``scientificMetadata`` holds

* ``format``, ``shape`` (z, y, x), ``ndim``, ``dtype`` and ``voxel_size`` (coarsest
  axis) with ``voxel_size_z``/``_y``/``_x`` in micrometres: all as
  :mod:`unified_framework.io` reads them, so the catalogue describes a volume exactly as
  every workflow will see it, and refuses what io refuses (truncated or corrupt files);
* ``path``: the canonical path of the catalogued file or folder (symlinks and ``..``
  resolved): a dataset's identity, and what workflows are started on;
* ``mdlma_content_key``: the idempotency key (:func:`.files.content_key`);
* the format's own tags under ``dicom``, ``tiff``, ``hdf5``, ``nifti`` or ``zarr``
  (:mod:`.tags`);

and an OrigDatablock listing every file with size and SHA-256.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyscicat.model import CreateDatasetOrigDatablockDto, DerivedDataset, RawDataset

from .. import __version__
from ..errors import InputError
from ..io import Volume, open_volume
from ..io.formats import split_dataset
from .files import CHECKSUM_ALGORITHM, canonical_path, content_key, dataset_files, describe_files
from .query import format_time
from .tags import entry, format_tags

#: Scientific-metadata key of the idempotency key.
CONTENT_KEY = "mdlma_content_key"
#: Scientific-metadata key of the catalogued file or folder.
PATH_KEY = "path"


class OrigDatablockDto(CreateDatasetOrigDatablockDto):
    """pyscicat's OrigDatablock DTO with ``chkAlg`` as SciCat defines it: a string.

    (pyscicat 0.4 types it as ``int``, which rejects ``"sha256"``.)
    """

    chkAlg: str | None = None


@dataclasses.dataclass
class DatasetRecord:
    """A dataset ready for ingestion.

    Attributes
    ----------
    dataset : pyscicat.model.RawDataset or pyscicat.model.DerivedDataset
    datablock : OrigDatablockDto
        The file list; its ``datasetId`` is set by the catalogue on ingestion.
    """

    dataset: RawDataset | DerivedDataset
    datablock: OrigDatablockDto

    @property
    def content_key(self) -> str:
        """Idempotency key stored in the scientific metadata."""
        return self.dataset.scientificMetadata[CONTENT_KEY]["value"]

    @property
    def path(self) -> str:
        """The catalogued file or folder."""
        return self.dataset.scientificMetadata[PATH_KEY]["value"]

    def to_dict(self) -> dict:
        """JSON-ready view: ``{"dataset": {...}, "origdatablock": {...}}``."""
        return {
            "dataset": self.dataset.model_dump(mode="json", exclude_none=True),
            "origdatablock": self.datablock.model_dump(mode="json", exclude_none=True),
        }


def extract_dataset(
    path: str | os.PathLike,
    *,
    owner: str,
    owner_group: str,
    contact_email: str,
    creation_location: str = "unknown",
    name: str | None = None,
    description: str | None = None,
    keywords: Sequence[str] = (),
    access_groups: Sequence[str] = (),
    input_datasets: Sequence[str] = (),
    used_software: Sequence[str] = (),
    job_parameters: dict | None = None,
    progress: bool = False,
) -> DatasetRecord:
    """Describe the volume at ``path`` as a SciCat dataset with its OrigDatablock.

    Parameters
    ----------
    path : path-like
        A volume file (``.dcm``, ``.tif``, ``.h5``/``.nxs``, ``.nii``/``.nii.gz``) or a
        folder (DICOM series, TIFF slices, ``.zarr`` store): anything
        :func:`unified_framework.io.open_volume` reads, ``FILE::ARRAY`` included for one
        of several arrays of an HDF5 file or Zarr group. Symlinks and ``..`` are resolved
        (:func:`.files.canonical_path`), so every way of naming the same files gives the
        same dataset.
    owner, owner_group, contact_email : str
        SciCat ownership fields (the CLI takes them from the configuration).
    creation_location : str
        Where raw data was taken, e.g. ``/DESY/PETRA III/P05``.
    name, description : str, optional
        Defaults: the file or folder name, and a one-line summary of the volume.
    keywords, access_groups : sequence of str
        The format name is always added to the keywords.
    input_datasets : sequence of str
        PIDs of the datasets this one was computed from. If given, the record is a
        ``DerivedDataset`` (provenance of a segmentation or registration).
    used_software : sequence of str
        For derived datasets; defaults to this framework and its version.
    job_parameters : dict, optional
        For derived datasets: the parameters of the job that produced them.
    progress : bool
        Show a progress bar while checksumming (on a terminal).

    Returns
    -------
    DatasetRecord

    Raises
    ------
    InputError
        If the path is missing, unsupported, corrupt or truncated (as
        :func:`unified_framework.io.read_volume` says), or a field is invalid.

    Examples
    --------
    >>> record = extract_dataset("scan.h5", owner="alice", owner_group="p05",
    ...                          contact_email="alice@example.org")          # doctest: +SKIP
    >>> record.dataset.scientificMetadata["voxel_size"]                      # doctest: +SKIP
    {'value': 0.65, 'unit': 'um'}
    """
    file, array = split_dataset(os.fspath(path))
    path = canonical_path(file)
    volume = open_volume(path, array)  # lazy: headers only; raises InputError for what io refuses
    array = _array_identity(path, array, volume)
    group, tags = format_tags(volume)
    source_folder, files = dataset_files(path)
    data_files = describe_files(source_folder, files, progress=progress)
    size = sum(f.size for f in data_files)
    newest = max(f.stat().st_mtime for f in files)

    fmt, shape, dtype = volume.metadata["format"], list(volume.shape), volume.dtype.name
    spacing = volume.spacing or (1.0,) * volume.ndim  # io always sets it; the type allows None
    metadata: dict[str, Any] = {
        "format": entry(fmt),
        "shape": entry(shape),
        "ndim": entry(len(shape)),
        "dtype": entry(dtype),
        "voxel_size": entry(max(spacing), "um"),
        **{
            f"voxel_size_{axis}": entry(value, "um")
            for axis, value in zip("zyx"[-volume.ndim :], spacing)
        },
        **geometry_metadata(volume),
        PATH_KEY: entry(str(path)),
        CONTENT_KEY: entry(content_key(source_folder, data_files, array)),
        group: tags,
    }
    summary = (
        f"{fmt} {'volume' if volume.ndim == 3 else 'image'} {' x '.join(map(str, shape))} {dtype},"
        f" voxel {'/'.join(f'{v:g}' for v in spacing)} um"
    )
    common = dict(
        owner=owner,
        ownerEmail=contact_email,
        contactEmail=contact_email,
        ownerGroup=owner_group,
        accessGroups=list(access_groups),
        creationTime=format_time(dt.datetime.fromtimestamp(newest, dt.UTC)),
        datasetName=name or (f"{path.name}::{array}" if array else path.name),
        description=description or summary,
        keywords=_unique([*keywords, fmt]),
        sourceFolder=str(source_folder),
        size=size,
        numberOfFiles=len(data_files),
        scientificMetadata=metadata,
        isPublished=False,
    )
    for field in ("owner", "ownerGroup", "contactEmail"):
        if not str(common[field]).strip():
            raise InputError(
                f"dataset {field}: must not be empty (set it in the [scicat] configuration)"
            )
    try:
        if input_datasets:
            dataset: RawDataset | DerivedDataset = DerivedDataset(
                **common,
                investigator=owner,
                inputDatasets=list(input_datasets),
                usedSoftware=list(used_software) or [f"mdlma-unified-framework {__version__}"],
                jobParameters=job_parameters,
            )
        else:
            dataset = RawDataset(
                **common,
                principalInvestigator=owner,
                creationLocation=creation_location,
                dataFormat=fmt,
            )
    except ValueError as exc:  # pydantic.ValidationError
        raise InputError(
            f"{path}: invalid dataset field ({str(exc).splitlines()[-1].strip()})"
        ) from None
    datablock = OrigDatablockDto(size=size, dataFileList=data_files, chkAlg=CHECKSUM_ALGORITHM)
    return DatasetRecord(dataset, datablock)


def _array_identity(path: Path, array: str | None, volume: Volume) -> str | None:
    """The array that, besides the files, identifies the dataset; None if the files alone do.

    An array named with ``FILE::ARRAY`` is part of the identity (two arrays of one HDF5
    file are two datasets) unless it is the one io reads from the file anyway, so that
    ``scan.nxs`` and ``scan.nxs::/entry/data/data`` are the same dataset.
    """
    if array is None:
        return None
    chosen = volume.metadata.get("dataset")
    try:
        default = open_volume(path).metadata.get("dataset")
    except InputError:  # io picks none by itself: the file holds several images
        default = None
    return None if chosen == default else chosen


def geometry_metadata(volume: Volume) -> dict:
    """Where the volume lies in the world, as scientific metadata: the one place it is taken from io.

    Returns ``{"affine": entry(4x4 list, "um"), "orientation": entry(code)}``: the
    :class:`unified_framework.io.Volume` affine (index ``(z, y, x)`` to physical position
    in micrometres, the convention of ``docs/io.md``) and its orientation code.

    Examples
    --------
    >>> import numpy as np
    >>> from unified_framework.io import Volume
    >>> geometry_metadata(Volume(np.zeros((2, 3, 4))))["orientation"]
    {'value': 'LPS', 'unit': ''}
    """
    return {
        "affine": entry([[float(v) for v in row] for row in volume.affine], "um"),
        "orientation": entry(volume.orientation),
    }


def dataset_path(dataset: dict) -> str:
    """What a job reads a catalogue dataset from: its file or folder, ``FILE::ARRAY`` for
    an array of an HDF5 file or Zarr group.

    Falls back to ``sourceFolder`` for datasets catalogued by other tools.

    Examples
    --------
    >>> dataset_path({"scientificMetadata": {"path": {"value": "/data/scan.h5"},
    ...               "hdf5": {"volume_dataset": {"value": "/entry/data/data"}}}})
    '/data/scan.h5::/entry/data/data'
    """
    path = metadata_value(dataset, PATH_KEY)
    path = str(path) if path else str(dataset["sourceFolder"])
    array = metadata_value(dataset, "hdf5", "volume_dataset") or metadata_value(
        dataset, "zarr", "volume_dataset"
    )
    return f"{path}::{array}" if array else path


def metadata_value(dataset: dict, *keys: str) -> Any:
    """The value of a (nested) scientific-metadata entry, or None if it is missing.

    ``metadata_value(dataset, "hdf5", "volume_dataset")`` reads
    ``scientificMetadata["hdf5"]["volume_dataset"]["value"]``.
    """
    node: Any = dataset.get("scientificMetadata") or {}
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node.get("value") if isinstance(node, dict) else None


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
