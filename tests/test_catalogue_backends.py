"""One behaviour, two backends: the same tests run on the SQLite catalogue and on SciCat.

SciCat cannot run here (its backend needs MongoDB, which no reachable registry ships),
so the SciCat backend is tested against ``tests/scicat_standin.py``: an in-memory HTTP
server on 127.0.0.1 that follows the SciCat v3/v4 API as documented in its OpenAPI
description (login, dataset create/get/patch, fullquery, fullfacet, filter, count,
origdatablocks), started by the fixtures below. Everything on our side (pyscicat models,
HTTP requests, query building, paging) is the real code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil

import numpy as np
import pytest
import requests
from pydicom.data import get_testdata_file
from scicat_standin import SciCatStandIn

from unified_framework.catalogue import (
    Query,
    SciCatCatalogue,
    SQLiteCatalogue,
    extract_dataset,
    open_catalogue,
    parse_condition,
    parse_time,
    thumbnail_slice,
)
from unified_framework.config import load_config
from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import write_volume

IDENTITY = {
    "owner": "Alice Doe",
    "contact_email": "alice@example.org",
    "creation_location": "/DESY/PETRA III/P05",
}
BACKENDS = ["sqlite", "scicat-v3", "scicat-v4"]


def _set_mtime(path, day: str) -> None:
    stamp = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Five small volumes with known voxel sizes, dates, groups and keywords."""
    folder = tmp_path_factory.mktemp("volumes")
    image, labels = make_implant_phantom((8, 16, 16), seed=2, spacing=(0.65, 0.65, 0.65))
    specs = {
        "implant_a": (
            write_volume(folder / "implant_a.tif", image, spacing=(0.65,) * 3),
            "2024-03-01T10:00:00",
        ),
        "implant_b": (
            write_volume(folder / "implant_b.h5", image, spacing=(1.3,) * 3),
            "2024-06-15T10:00:00",
        ),
        "bone": (
            write_volume(folder / "bone.nii.gz", image, spacing=(5.0,) * 3),
            "2024-09-30T10:00:00",
        ),
        "ct": (
            shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct_small.dcm"),
            "2023-12-31T10:00:00",
        ),
        "labels": (
            write_volume(folder / "implant_a_labels.tif", labels, spacing=(0.65,) * 3),
            "2024-03-02T10:00:00",
        ),
    }
    for path, day in specs.values():
        _set_mtime(path, day)
    return {name: str(path) for name, (path, _) in specs.items()}


OPTIONS = {
    "implant_a": dict(
        owner_group="p05",
        keywords=["implant", "mg"],
        description="Mg-Gd screw in rat tibia, week 4",
    ),
    "implant_b": dict(owner_group="p05", keywords=["implant"], description="Mg-Gd screw week 12"),
    "bone": dict(owner_group="p07", keywords=["bone"], description="trabecular bone reference"),
    "ct": dict(owner_group="clinic", keywords=[]),
}


@pytest.fixture(scope="module")
def records(volumes):
    return {name: extract_dataset(volumes[name], **IDENTITY, **OPTIONS[name]) for name in OPTIONS}


@pytest.fixture
def standin():
    server = SciCatStandIn().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        return SQLiteCatalogue(tmp_path / "catalogue.sqlite")
    server = request.getfixturevalue("standin")
    version = int(request.param[-1])
    return SciCatCatalogue(server.url(version), token=server.issue_token())


@pytest.fixture
def filled(catalogue, records, volumes):
    """The catalogue with the four raw volumes and the labels derived from implant_a."""
    pids = {name: catalogue.ingest(record).pid for name, record in records.items()}
    inputs = catalogue.resolve_inputs([volumes["implant_a"]])
    derived = extract_dataset(
        volumes["labels"],
        **IDENTITY,
        owner_group="p05",
        keywords=["segmentation"],
        input_datasets=inputs,
        used_software=["mdlma segment sun 0.1"],
    )
    pids["labels"] = catalogue.ingest(derived).pid
    return catalogue, pids


def _names(catalogue, pids, query: Query) -> set[str]:
    by_pid = {pid: name for name, pid in pids.items()}
    return {by_pid[d["pid"]] for d in catalogue.search(query).datasets}


def _where(*conditions: str) -> Query:
    return Query(conditions=tuple(parse_condition(c) for c in conditions), limit=100)


# --- ingestion ---------------------------------------------------------------------------


def test_ingest_is_idempotent(catalogue, records):
    first = catalogue.ingest(records["implant_a"])
    again = catalogue.ingest(records["implant_a"])
    assert first.action == "create" and first.pid
    assert again.action == "none" and again.pid == first.pid
    assert catalogue.search(Query()).total == 1


def test_the_same_files_by_another_name_exist_already(catalogue, tmp_path, monkeypatch):
    """A dataset is its canonical path: relative paths, symlinked folders and '..' find it."""
    data = tmp_path / "beamtime" / "scans"
    data.mkdir(parents=True)
    path = write_volume(data / "scan.tif", np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
    (tmp_path / "link").symlink_to(tmp_path / "beamtime", target_is_directory=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    first = catalogue.ingest(extract_dataset(path, **IDENTITY, owner_group="p05"))
    for name in (
        "../beamtime/scans/scan.tif",
        tmp_path / "link" / "scans" / "scan.tif",
        "../link/scans/../scans/scan.tif",
    ):
        again = catalogue.ingest(extract_dataset(name, **IDENTITY, owner_group="p05"))
        assert (again.action, again.pid) == ("none", first.pid), name
        assert catalogue.find_path(name) == first.pid
    assert catalogue.resolve_inputs(["../link/scans/scan.tif"]) == [first.pid]
    assert catalogue.search(Query()).total == 1
    assert catalogue.get(first.pid)["scientificMetadata"]["path"]["value"] == str(path)


def test_dry_run_writes_nothing(catalogue, records):
    catalogue.ingest(records["implant_a"])
    planned = catalogue.ingest(records["bone"], dry_run=True)
    existing = catalogue.ingest(records["implant_a"], dry_run=True)
    assert (planned.action, planned.pid, planned.dry_run) == ("create", None, True)
    assert existing.action == "none" and existing.pid is not None
    assert catalogue.search(Query()).total == 1


def test_get_and_files(filled, volumes):
    catalogue, pids = filled
    dataset = catalogue.get(pids["implant_b"])
    assert dataset["pid"] == pids["implant_b"]
    assert dataset["datasetName"] == "implant_b.h5"
    assert dataset["scientificMetadata"]["voxel_size"] == {
        "value": 1.3,
        "unit": "um",
        "valueSI": 1.3e-6,
        "unitSI": "m",
    }
    files = catalogue.files(pids["implant_b"])
    with open(volumes["implant_b"], "rb") as handle:
        content = handle.read()
    assert [(f["path"], f["size"], f["chk"]) for f in files] == [
        ("implant_b.h5", len(content), hashlib.sha256(content).hexdigest())
    ]
    assert dataset["size"] == len(content) and dataset["numberOfFiles"] == 1


def test_unknown_pid_is_an_input_error(filled):
    catalogue, _ = filled
    with pytest.raises(InputError, match="not in the catalogue"):
        catalogue.get("20.500.12269/no-such-dataset")
    with pytest.raises(InputError, match="not in the catalogue"):
        catalogue.files("20.500.12269/no-such-dataset")


def test_derived_dataset_links_its_input(filled, volumes, tmp_path):
    catalogue, pids = filled
    derived = catalogue.get(pids["labels"])
    assert derived["type"] == "derived"
    assert derived["inputDatasets"] == [pids["implant_a"]]
    assert derived["usedSoftware"] == ["mdlma segment sun 0.1"]
    assert catalogue.resolve_inputs([pids["bone"], volumes["bone"]]) == [pids["bone"], pids["bone"]]
    with pytest.raises(InputError, match="neither a catalogued PID nor an existing path"):
        catalogue.resolve_inputs(["no/such-pid"])
    stray = tmp_path / "stray.tif"
    write_volume(stray, np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="not catalogued yet"):
        catalogue.resolve_inputs([str(stray)])


def test_update_replaces_descriptive_fields(filled, volumes):
    catalogue, pids = filled
    changed = extract_dataset(
        volumes["bone"],
        **IDENTITY,
        owner_group="p07",
        keywords=["bone", "femur"],
        description="femoral head, cortical",
    )
    result = catalogue.ingest(changed, update=True)
    assert (result.action, result.pid) == ("update", pids["bone"])
    dataset = catalogue.get(pids["bone"])
    assert dataset["description"] == "femoral head, cortical"
    assert _names(catalogue, pids, Query("femoral")) == {"bone"}
    assert _names(catalogue, pids, Query("trabecular")) == set()
    assert _names(catalogue, pids, Query(keywords=("femur",))) == {"bone"}
    assert catalogue.search(Query()).total == 5


# --- search ------------------------------------------------------------------------------


def test_text_search(filled):
    catalogue, pids = filled
    assert _names(catalogue, pids, Query("tibia")) == {"implant_a"}
    assert _names(catalogue, pids, Query("tibia reference")) == {"implant_a", "bone"}  # words: any
    assert _names(catalogue, pids, Query('"screw week 12"')) == {"implant_b"}  # phrases: all
    assert _names(catalogue, pids, Query('"week 12 screw"')) == set()
    assert _names(catalogue, pids, Query("CT")) == {"ct"}  # scientific metadata strings
    assert _names(catalogue, pids, Query('zz"qq OR ) NEAR( * tibia')) == {
        "implant_a"
    }  # hostile text: words


def test_conditions_with_units(filled):
    catalogue, pids = filled
    assert _names(catalogue, pids, _where("voxel_size>1 um")) == {"implant_b", "bone", "ct"}
    assert _names(catalogue, pids, _where("voxel_size<1 um")) == {"implant_a", "labels"}
    assert _names(catalogue, pids, _where("voxel_size=650 nm")) == {"implant_a", "labels"}
    assert _names(catalogue, pids, _where("voxel_size>0.6 mm")) == {"ct"}  # DICOM stores mm
    # A range on one key: two conditions on the same key must both hold.
    assert _names(catalogue, pids, _where("voxel_size>0.001 mm", "voxel_size<0.002 mm")) == {
        "implant_b"
    }
    assert _names(catalogue, pids, _where("ndim>1 um")) == set()  # unitless values have no SI value


def test_conditions_without_units(filled):
    catalogue, pids = filled
    assert _names(catalogue, pids, _where("dicom.Rows=128")) == {"ct"}
    assert _names(catalogue, pids, _where("dicom.Modality=CT")) == {"ct"}
    assert _names(catalogue, pids, _where("format=tiff")) == {
        "implant_a",
        "labels",
    }  # io's format names
    assert _names(catalogue, pids, _where("ndim>2")) == {"implant_a", "implant_b", "bone", "labels"}
    assert _names(catalogue, pids, _where("format=tiff", "dtype=uint8")) == {"labels"}


def test_date_type_group_keyword_filters(filled):
    catalogue, pids = filled

    def names(**kwargs):
        return _names(catalogue, pids, Query(limit=100, **kwargs))

    assert names(created_from=parse_time("2024-01-01")) == {
        "implant_a",
        "implant_b",
        "bone",
        "labels",
    }
    assert names(created_to=parse_time("2024-03-01", end_of_day=True)) == {"ct", "implant_a"}
    assert names(
        created_from=parse_time("2024-03-02"), created_to=parse_time("2024-06-15", end_of_day=True)
    ) == {"labels", "implant_b"}
    assert names(dataset_type="derived") == {"labels"}
    assert names(dataset_type="raw") == {"implant_a", "implant_b", "bone", "ct"}
    assert names(owner_groups=("p07",)) == {"bone"}
    assert names(owner_groups=("p07", "clinic")) == {"bone", "ct"}
    assert names(keywords=("implant",)) == {"implant_a", "implant_b"}
    assert names(keywords=("implant", "mg")) == {"implant_a"}
    assert names(keywords=("tiff",)) == {"implant_a", "labels"}  # the format is a keyword
    assert names(text="screw", conditions=(parse_condition("voxel_size<1 um"),)) == {"implant_a"}


def test_sorting_and_paging(filled):
    catalogue, pids = filled
    by_pid = {pid: name for name, pid in pids.items()}

    def order(**kwargs):
        return [by_pid[d["pid"]] for d in catalogue.search(Query(limit=100, **kwargs)).datasets]

    assert order() == ["bone", "implant_b", "labels", "implant_a", "ct"]  # newest first
    assert order(descending=False) == ["ct", "implant_a", "labels", "implant_b", "bone"]
    names = [
        catalogue.get(pids[n])["datasetName"] for n in order(sort="datasetName", descending=False)
    ]
    assert names == sorted(names)
    sizes = [catalogue.get(pids[n])["size"] for n in order(sort="size")]
    assert sizes == sorted(sizes, reverse=True)

    pages = [catalogue.search(Query(skip=skip, limit=2)) for skip in (0, 2, 4)]
    assert [p.total for p in pages] == [5, 5, 5]
    assert [len(p.datasets) for p in pages] == [2, 2, 1]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [by_pid[d["pid"]] for p in pages for d in p.datasets] == order()
    assert catalogue.search(Query(skip=10, limit=2)).datasets == []


def test_thumbnail_of_a_catalogued_dataset(filled):
    catalogue, pids = filled
    image, _ = make_implant_phantom((8, 16, 16), seed=2, spacing=(0.65, 0.65, 0.65))
    for name in ("implant_a", "implant_b"):
        thumb = thumbnail_slice(catalogue.get(pids[name]))
        assert thumb.dtype == np.uint8 and thumb.shape == (16, 16)
        assert thumb.min() == 0 and thumb.max() == 255
        assert np.corrcoef(thumb.ravel(), image[4].ravel())[0, 1] > 0.99  # the middle slice
    assert thumbnail_slice(catalogue.get(pids["implant_a"]), index=1, max_size=8).shape == (8, 8)
    with pytest.raises(InputError, match="out of range"):
        thumbnail_slice(catalogue.get(pids["implant_a"]), index=8)


# --- backend-specific ----------------------------------------------------------------------


def test_sqlite_unique_content_key_survives_a_race(tmp_path, records):
    # Two processes may both find no dataset before either writes; the UNIQUE content
    # key inside the write transaction still leaves one dataset.
    catalogue = SQLiteCatalogue(tmp_path / "c.sqlite")
    first = catalogue._create(records["bone"])
    second = catalogue._create(records["bone"])
    assert first == second and catalogue.search(Query()).total == 1


def test_sqlite_corrupt_database_is_an_input_error(tmp_path):
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="broken.sqlite"):
        SQLiteCatalogue(path)


def test_scicat_rejects_requests_without_a_valid_token(standin, records):
    response = requests.get(f"{standin.url(3)}/datasets/fullquery", timeout=5)
    assert response.status_code == 401
    catalogue = SciCatCatalogue(standin.url(4), token="not-a-valid-token")
    with pytest.raises(InputError, match="not authorised"):
        catalogue.search(Query())
    with pytest.raises(InputError, match="no credentials"):
        SciCatCatalogue(standin.url(3))


@pytest.mark.parametrize("version", [3, 4])
def test_scicat_login_with_credentials(standin, records, version):
    catalogue = SciCatCatalogue(
        standin.url(version), username=standin.username, password=standin.password
    )
    pid = catalogue.ingest(records["ct"]).pid
    assert catalogue.get(pid)["datasetName"] == "ct_small.dcm"
    assert ("POST", "/api/v3/auth/login") in standin.requests
    with pytest.raises(InputError, match="login as 'ingestor' failed"):
        SciCatCatalogue(standin.url(version), username=standin.username, password="wrong")


def test_scicat_never_logs_the_token_or_password(standin, records, caplog):
    caplog.set_level(logging.DEBUG)
    token = standin.issue_token()
    by_token = SciCatCatalogue(standin.url(4), token=token)
    by_login = SciCatCatalogue(standin.url(3), username=standin.username, password=standin.password)
    pid = by_token.ingest(records["bone"]).pid
    by_login.search(Query("bone", conditions=(parse_condition("voxel_size>1 um"),)))
    by_login.get(pid)
    assert "127.0.0.1" in caplog.text  # the capture does see the HTTP traffic (urllib3, ours)
    for secret in (token, standin.password, *standin.tokens):
        assert secret not in caplog.text
        assert secret not in repr(by_token) + repr(by_login)


def test_scicat_uses_the_documented_endpoints(standin, records):
    for version in (3, 4):
        catalogue = SciCatCatalogue(standin.url(version), token=standin.issue_token())
        catalogue.ingest(records[["bone", "ct"][version - 3]])
    paths = {path for _, path in standin.requests}
    assert {"/api/v3/datasets/fullquery", "/api/v3/datasets/fullfacet", "/api/v3/datasets"} <= paths
    assert {"/api/v4/datasets", "/api/v4/datasets/count", "/api/v4/origdatablocks"} <= paths
    assert any(
        p.startswith("/api/v3/datasets/20.500.12269") and p.endswith("/origdatablocks")
        for p in paths
    )
    stored = list(standin.datasets.values())
    assert stored[0]["principalInvestigator"] == "Alice Doe"  # v3 body
    assert stored[1]["principalInvestigators"] == [
        "Alice Doe"
    ]  # v4 body (the stand-in refuses v3 names)
    assert "principalInvestigator" not in stored[1]


@pytest.mark.parametrize("version", [3, 4])
def test_scicat_refused_file_list_leaves_no_dataset(standin, records, version):
    catalogue = SciCatCatalogue(standin.url(version), token=standin.issue_token())
    standin.refuse_origdatablocks = True
    with pytest.raises(InputError, match="HTTP 500"):
        catalogue.ingest(records["bone"])
    assert standin.datasets == {} and ("DELETE" in {m for m, _ in standin.requests})
    standin.refuse_origdatablocks = False
    pid = catalogue.ingest(records["bone"]).pid  # a re-run is not mistaken for "exists"
    assert len(catalogue.files(pid)) == 1


def test_open_catalogue_follows_the_configuration(standin, tmp_path):
    no_file = str(tmp_path / "no-config.toml")
    local = open_catalogue(
        load_config(
            env={"MDLMA_CONFIG": no_file, "MDLMA_CATALOGUE": str(tmp_path / "local.sqlite")}
        )
    )
    assert isinstance(local, SQLiteCatalogue) and local.path == tmp_path / "local.sqlite"
    remote = open_catalogue(
        load_config(
            env={
                "MDLMA_CONFIG": no_file,
                "MDLMA_SCICAT_URL": standin.url(4),
                "MDLMA_SCICAT_TOKEN": standin.issue_token(),
            }
        )
    )
    assert isinstance(remote, SciCatCatalogue) and remote.api_version == 4
    assert remote.search(Query()).total == 0
