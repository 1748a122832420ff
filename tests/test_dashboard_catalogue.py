"""The Catalogue page with Streamlit's AppTest on the embedded SQLite catalogue.

Real phantom volumes are written, described by :func:`extract_dataset` and ingested
into a SQLite catalogue at ``MDLMA_CATALOGUE``; the page searches it, shows a dataset
and hands its path to the job composer. The composer part runs against the real
test SLURM cluster like the other page tests. (The SciCat backend behind the same
page is covered by ``test_catalogue_backends.py``.)
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture
from streamlit.testing.v1 import AppTest

from unified_framework.catalogue import (
    MAX_TERMS,
    MAX_TEXT_CHARS,
    SQLiteCatalogue,
    dataset_path,
    extract_dataset,
)
from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import open_volume, write_volume

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
sys.path.insert(0, str(REPO / "dashboard"))
from components import catalogue as page_logic  # noqa: E402 - needs dashboard/ on sys.path

IDENTITY = {
    "owner": "Alice Doe",
    "contact_email": "alice@example.org",
    "creation_location": "/DESY/PETRA III/P05",
}


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A SQLite catalogue with 3 TIFF phantoms (0.65 um) and 1 HDF5 phantom (5 um); name -> dataset."""
    monkeypatch.setenv("MDLMA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MDLMA_CATALOGUE", str(tmp_path / "catalogue.sqlite"))
    st.cache_data.clear()
    catalogue = SQLiteCatalogue(tmp_path / "catalogue.sqlite")
    image, _ = make_implant_phantom((12, 24, 24), seed=3)
    datasets = {}
    for number in range(3):
        path = write_volume(
            tmp_path / f"screw_week{number}.tif", image + number, spacing=(0.65,) * 3
        )
        record = extract_dataset(
            path,
            **IDENTITY,
            owner_group="p05",
            keywords=["implant"],
            description=f"Mg screw week {number}",
        )
        datasets[path.name] = catalogue.get(catalogue.ingest(record).pid)
    path = write_volume(tmp_path / "bone.h5", image, spacing=(5.0,) * 3)
    record = extract_dataset(
        path, **IDENTITY, owner_group="p07", keywords=["bone"], description="trabecular bone"
    )
    datasets[path.name] = catalogue.get(catalogue.ingest(record).pid)
    return datasets


def open_catalogue_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=90)
    app.run()
    app.switch_page("views/catalogue.py").run()
    return app


def search(
    app: AppTest, text: str = "", conditions: str = "", descending: bool = True, **fields
) -> AppTest:
    app.text_input(key="catalogue_text").set_value(text)
    app.text_area(key="catalogue_conditions").set_value(conditions)
    app.toggle(key="catalogue_descending").set_value(descending)
    for key, value in fields.items():
        app.selectbox(key=f"catalogue_{key}").set_value(value)
    app.button(key="FormSubmitter:catalogue_search-Search").click()
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def results(app: AppTest):
    return next(f.value for f in app.dataframe if "voxel size" in f.value.columns)


def errors(app: AppTest) -> list[str]:
    return [str(e.value) for e in app.error]


def test_page_lists_searches_with_units_and_shows_a_dataset(filled):
    app = open_catalogue_page()
    assert not app.exception, [e.message for e in app.exception]
    assert set(results(app)["name"]) == set(filled)

    search(app, conditions="voxel_size < 1 um")  # 0.65 um matches, 5 um does not
    assert not app.exception
    assert sorted(results(app)["name"]) == ["screw_week0.tif", "screw_week1.tif", "screw_week2.tif"]
    search(app, text="trabecular", conditions="voxel_size > 4000 nm")
    table = results(app)
    assert list(table["name"]) == ["bone.h5"] and table["voxel size"].iloc[0] == "5 um"

    # Detail: metadata, files with checksums and a real thumbnail of the volume.
    assert app.selectbox(key="catalogue_dataset").value == filled["bone.h5"]["pid"]
    metadata = next(
        f.value for f in app.dataframe if list(f.value.columns) == ["key", "value", "unit"]
    )
    assert metadata.set_index("key").loc["shape", "value"] == "[12, 24, 24]"
    files = next(f.value for f in app.dataframe if "checksum" in f.value.columns)
    assert list(files["path"]) == ["bone.h5"] and files["checksum"].str.len().iloc[0] >= 32
    assert len(app.get("image")) == 1
    assert app.slider(key="catalogue_slice").value == 6


def test_paging_moves_through_the_results(filled, tmp_path):
    catalogue = SQLiteCatalogue(tmp_path / "catalogue.sqlite")
    for number in range(8):
        path = write_volume(
            tmp_path / f"extra{number:02d}.tif", np.full((2, 8, 8), number, np.uint8)
        )
        catalogue.ingest(extract_dataset(path, **IDENTITY, owner_group="p05"))
    names = sorted([*filled, *(f"extra{n:02d}.tif" for n in range(8))])
    app = open_catalogue_page()
    search(app, descending=False, sort="datasetName", per_page=10)
    assert list(results(app)["name"]) == names[:10]
    assert (
        app.button(key="catalogue_previous").disabled
        and not app.button(key="catalogue_next").disabled
    )
    app.button(key="catalogue_next").click().run()
    assert list(results(app)["name"]) == names[10:]
    assert any("showing 11–12" in str(m.value) for m in app.markdown)
    assert app.button(key="catalogue_next").disabled
    app.button(key="catalogue_previous").click().run()
    assert list(results(app)["name"]) == names[:10]


def test_bad_conditions_and_dates_are_named_in_one_line(filled):
    app = open_catalogue_page()
    search(app, conditions="format = TIFF\nvoxel_size < ten um")
    assert any(e.startswith("Metadata conditions, line 2:") for e in errors(app)), errors(app)
    search(app, conditions="voxel_size >= 1 um")
    assert any("use =, > or <" in e for e in errors(app)), errors(app)
    assert not [f for f in app.dataframe if "voxel size" in f.value.columns]
    with pytest.raises(InputError, match="Created: the range starts"):
        page_logic.build_query(created_from=dt.date(2025, 2, 1), created_to=dt.date(2025, 1, 1))


def test_hostile_search_text_is_only_text(filled):
    app = open_catalogue_page()
    search(
        app,
        text="zz'); DROP TABLE datasets; -- \" OR 1=1 $(rm -rf x)",
        conditions="name=x'; DELETE FROM datasets",
    )
    assert not app.exception and not errors(app)
    assert any("No dataset matches" in str(i.value) for i in app.info)
    search(app)
    assert len(results(app)) == len(filled)  # the catalogue is intact


def test_search_text_is_limited_in_the_box_and_in_the_query(filled):
    app = open_catalogue_page()
    box = app.text_input(key="catalogue_text")
    assert box.max_chars == MAX_TEXT_CHARS
    box.input("tibia " * 100)  # typing stops at the limit, as in the browser
    assert box.value == ""
    # A client that sends more anyway (set_value bypasses the box) is cut at the limit by
    # Streamlit itself; the search then runs on what fits.
    app.text_input(key="catalogue_text").set_value("x" * (MAX_TEXT_CHARS + 100))
    app.button(key="FormSubmitter:catalogue_search-Search").click()
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert len(app.text_input(key="catalogue_text").value) == MAX_TEXT_CHARS and not errors(app)
    # Too many words within the limit: the query's one-line error names the field.
    search(app, text=" ".join(f"w{n}" for n in range(MAX_TERMS + 1)))
    assert any(e.startswith(f"search text: {MAX_TERMS + 1} words") for e in errors(app)), errors(
        app
    )
    assert not [f for f in app.dataframe if "voxel size" in f.value.columns]


def test_use_in_job_composer_fills_the_template(filled, slurm_cluster):  # noqa: F811
    app = open_catalogue_page()
    search(app, text="trabecular")
    app.selectbox(key="catalogue_template").set_value("sun-predict").run()
    offered = [
        label.rsplit("(", 1)[1].rstrip(")")
        for label in app.selectbox(key="catalogue_template").options
    ]
    assert offered == [
        "denoise",
        "histology-match",
        "infer",
        "nnunet-predict",
        "pipeline",
        "quantify",
        "register",
        "score",
        "search",
        "sun-predict",
        "sun-train",
    ]  # the templates with a `dataset: true` input
    assert app.selectbox(key="catalogue_parameter").options == ["volume"]
    app.selectbox(key="catalogue_parameter").set_value("volume")
    app.button(key="catalogue_use").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox(key="composer_template").value == "sun-predict"
    filled_in = app.text_input(key="composer_sun-predict_volume").value
    assert filled_in == f"{Path(filled['bone.h5']['sourceFolder']) / 'bone.h5'}::/entry/data/data"
    assert open_volume(filled_in).data.shape == (12, 24, 24)  # what the job will read
    assert any("from the catalogue" in str(i.value) for i in app.info)


def test_job_paths_and_tables_of_the_page_logic(filled):
    tiff, hdf5 = filled["screw_week0.tif"], filled["bone.h5"]
    assert dataset_path(tiff).endswith("screw_week0.tif") and "::" not in dataset_path(tiff)
    assert dataset_path(hdf5).endswith("bone.h5::/entry/data/data")
    assert page_logic.slice_count(tiff) == 12
    table = page_logic.results_table([tiff, hdf5])
    assert list(table.columns) == list(page_logic.RESULT_COLUMNS)
    assert (
        list(table["format"]) == ["tiff", "hdf5"] and list(table["shape"]) == ["12 x 24 x 24"] * 2
    )
    assert np.isclose(table["size MB"].iloc[0], tiff["size"] / 1e6, atol=0.01)
    assert page_logic.metadata_table({}).empty and page_logic.files_table([]).empty
