"""Dask worker plugin of the search engine (a module of its own: it imports ``distributed``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from distributed import WorkerPlugin

logger = logging.getLogger(__name__)


class Preload(WorkerPlugin):
    """Each worker imports the pipeline's libraries and reads the training images once.

    Trials then find the images in the worker's cache
    (:func:`unified_framework.search.engine._read`): the data is never sent with a
    task, and a worker's first trial does not pay for imports. Dask runs it on the
    workers there now and on every one that joins later (SLURM jobs).
    """

    name = "mdlma-search-preload"

    def __init__(self, pipeline: dict[str, Any], data: Sequence[Sequence[str]]) -> None:
        self.pipeline, self.data = pipeline, [list(pair) for pair in data]

    def setup(self, worker: Any) -> None:
        del worker
        try:
            from ..classical import majority_order  # noqa: F401  (imports skimage, scipy)
            from ..metrics import score_volumes  # noqa: F401
            from .engine import _read
            from .pipeline import load_pipeline

            load_pipeline(self.pipeline)
            for pair in self.data:
                for path in pair:
                    _read(str(path))
        except Exception:  # a trial reports the same problem as its error
            logger.debug("preloading the search data failed", exc_info=True)
