"""Turn a volume on disk into a SciCat dataset record (dataset + OrigDatablock).

The record uses pyscicat's models, so what is ingested is exactly what SciCat accepts:
a ``RawDataset`` (or a ``DerivedDataset`` linked to its input datasets, for segmentation
and registration outputs) whose ``scientificMetadata`` holds

* ``format``, ``shape`` (z, y, x), ``ndim``, ``dtype``;
* ``voxel_size`` (coarsest axis) and ``voxel_size_z``/``_y``/``_x`` with the file's unit;
* ``path``: the file or folder that was catalogued (what workflows are started on);
* ``mdlma_content_key``: the idempotency key (:func:`.files.content_key`);
* the format's own tags under ``dicom``, ``tiff``, ``hdf5``, ``nifti`` or ``zarr``;

and an OrigDatablock listing every file with size and SHA-256.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any, Sequence

from pyscicat.model import CreateDatasetOrigDatablockDto, DerivedDataset, RawDataset

from .. import __version__
from ..errors import InputError
from .files import CHECKSUM_ALGORITHM, content_key, dataset_files, describe_files
from .formats import entry, read_volume_info
from .query import format_time

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
        folder (DICOM series, TIFF slices, ``.zarr`` store).
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
        If the path is missing, unsupported, corrupt, or a field is invalid.
    """
    path = Path(path).absolute()
    info = read_volume_info(path)
    source_folder, files = dataset_files(path)
    data_files = describe_files(source_folder, files, progress=progress)
    size = sum(f.size for f in data_files)
    newest = max(f.stat().st_mtime for f in files)

    metadata: dict[str, Any] = {
        "format": entry(info.format),
        "shape": entry(list(info.shape)),
        "ndim": entry(len(info.shape)),
        "dtype": entry(info.dtype),
    }
    if info.voxel_size:
        metadata["voxel_size"] = entry(max(info.voxel_size), info.voxel_unit)
        for axis, value in zip("zyx"[-len(info.voxel_size):], info.voxel_size):
            metadata[f"voxel_size_{axis}"] = entry(value, info.voxel_unit)
    metadata[PATH_KEY] = entry(str(path))
    metadata[CONTENT_KEY] = entry(content_key(source_folder, data_files))
    metadata[info.format.lower()] = info.tags

    shape_text = " x ".join(str(n) for n in info.shape)
    voxel_text = (
        f", voxel {'/'.join(f'{v:g}' for v in info.voxel_size)} {info.voxel_unit}"
        if info.voxel_size else ""
    )
    common = dict(
        owner=owner,
        ownerEmail=contact_email,
        contactEmail=contact_email,
        ownerGroup=owner_group,
        accessGroups=list(access_groups),
        creationTime=format_time(dt.datetime.fromtimestamp(newest, dt.timezone.utc)),
        datasetName=name or path.name,
        description=description or f"{info.format} volume {shape_text} {info.dtype}{voxel_text}",
        keywords=_unique([*keywords, info.format.lower()]),
        sourceFolder=str(source_folder),
        size=size,
        numberOfFiles=len(data_files),
        scientificMetadata=metadata,
        isPublished=False,
    )
    for field in ("owner", "ownerGroup", "contactEmail"):
        if not str(common[field]).strip():
            raise InputError(f"dataset {field}: must not be empty (set it in the [scicat] configuration)")
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
                dataFormat=info.format,
            )
    except ValueError as exc:  # pydantic.ValidationError
        raise InputError(f"{path}: invalid dataset field ({str(exc).splitlines()[-1].strip()})") from None
    datablock = OrigDatablockDto(size=size, dataFileList=data_files, chkAlg=CHECKSUM_ALGORITHM)
    return DatasetRecord(dataset, datablock)


def dataset_path(dataset: dict) -> str:
    """What a job reads a catalogue dataset from: its file or folder, ``file.h5::/array`` for HDF5.

    Falls back to ``sourceFolder`` for datasets catalogued by other tools.
    """
    path = metadata_value(dataset, PATH_KEY)
    path = str(path) if path else str(dataset["sourceFolder"])
    array = metadata_value(dataset, "hdf5", "volume_dataset")
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
