"""The dashboard as an ASGI application, for ``uvicorn --uds SOCKET``.

Streamlit's own server (``streamlit run``, Starlette since Streamlit 1.5x) refuses
``--server.address unix://...``; ``st.App`` is its public ASGI entry, and uvicorn
serves it on a unix socket. Routes are at the root: the proxy strips its
``/user/<name>/<entry>/`` prefix and Streamlit's frontend finds the prefix from the
page's URL. Streamlit options come from ``STREAMLIT_*`` variables or config files as
usual (XSRF protection stays at its default, on).
"""

import streamlit as st

from ..cli.dashboard import dashboard_app

app = st.App(str(dashboard_app()))
