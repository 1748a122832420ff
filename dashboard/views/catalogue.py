"""Catalogue: search the dataset catalogue, look at a dataset, start a job on it.

The catalogue is SciCat when ``[scicat] url`` is configured, otherwise the embedded
SQLite catalogue (``mdlma catalogue ingest`` fills either). "Use in job composer" opens
the composer with the chosen template's input field set to the dataset's path.
"""

import streamlit as st
from components import catalogue, ui

from unified_framework import hpc
from unified_framework.catalogue import (
    MAX_TERMS,
    MAX_TEXT_CHARS,
    SORT_FIELDS,
    dataset_path,
    open_catalogue,
    thumbnail_slice,
)
from unified_framework.errors import MDLMAError

st.title("Dataset catalogue")
settings = ui.settings()
backend = settings["scicat"]["url"] or settings["catalogue"]
st.caption(f"Catalogue: {backend}")


def catalogue_key() -> tuple[str, str]:
    """What identifies the catalogue in the caches (a changed configuration is a new catalogue)."""
    return settings["scicat"]["url"], str(settings["catalogue"])


@st.cache_data(ttl=30, show_spinner=False)
def search(query, _key):
    page = open_catalogue(settings).search(query)
    return page.datasets, page.total


@st.cache_data(ttl=30, show_spinner=False)
def details(pid: str, _key):
    found = open_catalogue(settings)
    return found.get(pid), found.files(pid)


@st.cache_data(ttl=300, show_spinner=False)
def thumbnail(dataset: dict, index: int):
    return thumbnail_slice(dataset, index=index)


with st.form("catalogue_search"):
    # The browser stops typing at max_chars; the Query checks the same limit for any other client.
    text = st.text_input(
        "Search text",
        key="catalogue_text",
        placeholder='implant "bone screw"',
        max_chars=MAX_TEXT_CHARS,
        help="Words match anywhere in the dataset (name, description, metadata); quote a phrase."
        f" At most {MAX_TEXT_CHARS} characters and {MAX_TERMS} words.",
    )
    conditions = st.text_area(
        "Metadata conditions",
        key="catalogue_conditions",
        height=80,
        placeholder="voxel_size < 10 um\nformat = zarr",
        help="One per line: KEY = VALUE, KEY < NUMBER [UNIT] or KEY > NUMBER [UNIT]; units convert (um, mm, keV, ...).",
    )
    columns = st.columns(4)
    dataset_type = columns[0].selectbox(
        "Type", ["", "raw", "derived"], key="catalogue_type", format_func=lambda t: t or "any"
    )
    created_from = columns[1].date_input("Created from", value=None, key="catalogue_from")
    created_to = columns[2].date_input("Created to", value=None, key="catalogue_to")
    per_page = columns[3].selectbox(
        "Per page", [10, 25, 50, 100], index=1, key="catalogue_per_page"
    )
    columns = st.columns(4)
    owner_groups = columns[0].text_input(
        "Owner groups", key="catalogue_groups", help="Comma-separated; any of them."
    )
    keywords = columns[1].text_input(
        "Keywords", key="catalogue_keywords", help="Comma-separated; all of them."
    )
    sort = columns[2].selectbox("Sort by", SORT_FIELDS, key="catalogue_sort")
    descending = columns[3].toggle("Newest / largest first", value=True, key="catalogue_descending")
    if st.form_submit_button("Search", type="primary"):
        st.session_state["catalogue_page"] = 1

page_number = st.session_state.get("catalogue_page", 1)
try:
    query = catalogue.build_query(
        text=text,
        conditions=conditions,
        dataset_type=dataset_type,
        created_from=created_from,
        created_to=created_to,
        owner_groups=owner_groups,
        keywords=keywords,
        sort=sort,
        descending=descending,
        page=page_number,
        per_page=per_page,
    )
    datasets, total = search(query, catalogue_key())
except MDLMAError as exc:
    ui.show_error(exc)
    st.stop()

if not datasets:
    st.info(
        "No dataset matches."
        if total == 0
        else f"Page {page_number} is past the last of {total} datasets."
    )
    if total == 0 and not (text or conditions):
        st.caption("Add datasets with `mdlma catalogue ingest PATH`.")
    st.stop()
first = query.skip + 1
st.write(
    f"**{total}** {'dataset matches' if total == 1 else 'datasets match'}; "
    f"showing {first}–{query.skip + len(datasets)}."
)
st.dataframe(catalogue.results_table(datasets), hide_index=True, key="catalogue_results")
paging = st.columns([1, 1, 6])
paging[0].button(
    "Previous",
    key="catalogue_previous",
    disabled=page_number == 1,
    on_click=lambda: st.session_state.update(catalogue_page=page_number - 1),
)
paging[1].button(
    "Next",
    key="catalogue_next",
    disabled=query.skip + len(datasets) >= total,
    on_click=lambda: st.session_state.update(catalogue_page=page_number + 1),
)

st.subheader("Dataset")
names = {d["pid"]: d.get("datasetName", d["pid"]) for d in datasets}
pid = st.selectbox(
    "Dataset", list(names), key="catalogue_dataset", format_func=lambda p: f"{names[p]}  ({p})"
)
try:
    dataset, files = details(pid, catalogue_key())
except MDLMAError as exc:
    ui.show_error(exc)
    st.stop()
st.caption(dataset.get("description", ""))
overview, metadata_tab, files_tab = st.tabs(["Overview", "Metadata", "Files"])
with overview:
    left, right = st.columns([2, 3])
    left.markdown(
        f"- **type** {dataset.get('type', '')}\n- **owner** {dataset.get('owner', '')} "
        f"({dataset.get('ownerGroup', '')})\n- **created** {dataset.get('creationTime', '')}\n"
        f"- **path** `{dataset_path(dataset)}`\n"
        + (
            f"- **computed from** {', '.join(dataset['inputDatasets'])}\n"
            if dataset.get("inputDatasets")
            else ""
        )
        + (
            f"- **keywords** {', '.join(dataset.get('keywords') or [])}"
            if dataset.get("keywords")
            else ""
        )
    )
    depth = catalogue.slice_count(dataset)
    index = (
        right.slider("Slice (z)", 0, depth - 1, depth // 2, key="catalogue_slice")
        if depth > 1
        else None
    )
    try:
        right.image(
            thumbnail(dataset, index),
            caption=f"{dataset.get('datasetName', '')}"
            + (f", slice {index} of {depth}" if index is not None else ""),
            clamp=True,
        )
    except MDLMAError as exc:
        ui.show_error(exc, right)
with metadata_tab:
    st.dataframe(catalogue.metadata_table(dataset), hide_index=True, key="catalogue_metadata")
with files_tab:
    st.dataframe(catalogue.files_table(files), hide_index=True, key="catalogue_files")

st.subheader("Use in job composer")
try:
    templates = {t.name: t for t in hpc.list_templates() if catalogue.input_parameters(t)}
except MDLMAError as exc:
    ui.show_error(exc)
    st.stop()
use = st.columns(3)
template_name = use[0].selectbox(
    "Template",
    list(templates),
    key="catalogue_template",
    format_func=lambda n: f"{templates[n].title}  ({n})",
)
parameter = use[1].selectbox(
    "as",
    catalogue.input_parameters(templates[template_name]),
    key="catalogue_parameter",
    format_func=lambda p: templates[template_name].parameters[p].label or p,
)
if use[2].button("Open the composer", type="primary", key="catalogue_use"):
    st.session_state["composer_prefill"] = {
        "template": template_name,
        "values": {parameter: dataset_path(dataset)},
        "source": f"{names[pid]} ({pid})",
    }
    st.switch_page("views/composer.py")
