"""Shared pieces of the MDLMA dashboard.

Data logic lives in small Streamlit-free modules (:mod:`.joblist`, :mod:`.metrics`,
:mod:`.volumes`, :mod:`.forms`, :mod:`.paths`, :mod:`.compare`, :mod:`.cluster`) that
the tests import directly; :mod:`.ui` and :mod:`.navigation` hold the Streamlit parts
shared by the pages.
"""
