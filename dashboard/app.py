"""Entry point of the MDLMA dashboard: ``mdlma dashboard`` runs ``streamlit run`` on this file.

The pages are registered with ``st.navigation`` in :mod:`components.navigation`;
links between them use ``st.page_link``/``st.switch_page`` with query parameters, so
the app works under any URL prefix (``--server.baseUrlPath``).
"""

import streamlit as st
from components.navigation import navigation

from unified_framework.config import load_config
from unified_framework.errors import InputError

st.set_page_config(page_title="MDLMA dashboard", page_icon=":material/biotech:", layout="wide")
try:
    load_config()
except InputError as exc:  # every page needs the configuration: say once what is wrong with it
    st.error(f"Configuration: {exc}", icon=":material/settings:")
    st.stop()
navigation().run()
