"""TensorFlow models in the framework: Keras 2D networks along SUN's axes, StarDist nuclei.

Import TensorFlow only through :func:`import_tensorflow`: it loads torch (and triton)
first, because TensorFlow loaded before triton crashes the process, and it keeps
TensorFlow from taking every core and all GPU memory next to torch (see
``docs/nnunet.md``, *TensorFlow*).
"""

from __future__ import annotations

import os
from typing import Any

_CONFIGURED = False


def import_tensorflow(threads: int | None = None) -> Any:
    """TensorFlow, imported after torch, with bounded threads and GPU memory growth.

    Parameters
    ----------
    threads : int, optional
        Intra-op threads; default torch's thread count (so both libraries share the
        cores a job was given rather than each taking all of them).

    Returns
    -------
    module
        ``tensorflow``.
    """
    global _CONFIGURED
    import torch

    try:  # triton must be loaded before TensorFlow (a segfault otherwise)
        import triton  # noqa: F401
    except ImportError:
        pass
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _CONFIGURED:
        n = int(threads or torch.get_num_threads() or 1)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            for gpu in tf.config.list_physical_devices("GPU"):
                # Allocate GPU memory as needed, leaving the rest to torch.
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # TensorFlow was initialised already (by the caller): keep its settings
        _CONFIGURED = True
    return tf
