"""Ad hoc predictions from a running predict service (``mdlma serve``) on any page.

The services announce themselves in state files below ``MDLMA_HOME/services`` (URL,
token, models, process id; see :mod:`unified_framework.inference.service`); a page
hands the slice it shows to :func:`predict_panel` and gets the service's labels back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from unified_framework.errors import MDLMAError
from unified_framework.inference.service import request_prediction, running_services

from . import ui


def fingerprint(image: np.ndarray) -> str:
    """What identifies an image's content (a stored answer belongs to one image)."""
    array = np.ascontiguousarray(image)
    return hashlib.sha1(array.tobytes() + str((array.shape, array.dtype)).encode()).hexdigest()


def describe(service: dict[str, Any]) -> str:
    """One line naming a service: URL and models."""
    return f"{service['url']} ({', '.join(service.get('models', []))})"


def predict_panel(image: np.ndarray, key: str, home: Path | None = None) -> np.ndarray | None:
    """Choose a running service and model; a button sends ``image``; returns its labels.

    The answer is kept in the session for this image, so it survives reruns until the
    image changes. Without a running service it says how to start one.
    """
    found = running_services(home if home is not None else ui.home())
    if not found:
        st.caption(
            "No predict service is running: start one on the Inference page or with `mdlma serve MODEL`."
        )
        return None
    cols = st.columns([3, 2, 1])
    index = cols[0].selectbox(
        "predict service",
        range(len(found)),
        format_func=lambda i: describe(found[i]),
        key=f"{key}_service",
    )
    service = found[int(index or 0)]
    model = cols[1].selectbox("model", service.get("models", []), key=f"{key}_model")
    stash = f"{key}_answer"
    digest = fingerprint(image)
    if cols[2].button("Predict", key=f"{key}_predict", help="Send this slice to the service"):
        try:
            with st.spinner("Asking the predict service ..."):
                labels = request_prediction(
                    service["url"], image, model=model, token=service.get("token") or None
                )
        except MDLMAError as exc:
            ui.show_error(exc)
            return None
        st.session_state[stash] = (digest, labels)
    saved = st.session_state.get(stash)
    return saved[1] if saved and saved[0] == digest else None
