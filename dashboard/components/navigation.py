"""The dashboard's pages, grouped into sections of the sidebar."""

from __future__ import annotations

import streamlit as st

#: Section -> pages as (script relative to ``dashboard/``, title, icon, URL path).
#: A new page is one more tuple here (the "Data" section holds the catalogue).
PAGES: dict[str, list[tuple[str, str, str, str]]] = {
    "Cluster": [
        ("views/resources.py", "Resources", ":material/dns:", "resources"),
        ("views/jobs.py", "My jobs", ":material/view_list:", "jobs"),
    ],
    "Workflows": [
        ("views/composer.py", "Job composer", ":material/edit_note:", "composer"),
        ("views/viewer.py", "Job viewer", ":material/monitoring:", "viewer"),
        ("views/compare.py", "Segmentation comparison", ":material/compare:", "compare"),
        ("views/registration.py", "Registration", ":material/join_inner:", "registration"),
        ("views/histology.py", "Virtual histology", ":material/biotech:", "histology"),
        ("views/analysis.py", "Analysis", ":material/analytics:", "analysis"),
        ("views/search.py", "Parameter search", ":material/tune:", "search"),
        ("views/denoise.py", "Denoising", ":material/blur_on:", "denoise"),
        ("views/annotate.py", "Annotate", ":material/brush:", "annotate"),
        ("views/inference.py", "Inference", ":material/model_training:", "inference"),
    ],
    "Data": [
        ("views/catalogue.py", "Catalogue", ":material/dataset:", "catalogue"),
    ],
}


def navigation():
    """Register every page with ``st.navigation`` (Resources is the start page)."""
    sections = {}
    first = True
    for section, pages in PAGES.items():
        if not pages:
            continue
        sections[section] = [
            st.Page(script, title=title, icon=icon, url_path=url_path, default=(first and i == 0))
            for i, (script, title, icon, url_path) in enumerate(pages)
        ]
        first = False
    return st.navigation(sections)
