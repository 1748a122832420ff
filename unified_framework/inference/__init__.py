"""Tiled, distributed, resumable inference of any 2D/3D segmentation model (``docs/inference.md``).

Examples
--------
>>> from unified_framework.inference import infer, load_model
>>> infer("model.pt", "slide.ome.tif", "seg.zarr", workers=2)   # doctest: +SKIP
"""

from .engine import (
    DEFAULT_BUDGET,
    ImageSource,
    InferencePlan,
    RunReport,
    finish,
    infer,
    model_digest,
    pending_blocks,
    plan_inference,
    predict_array,
    prepare,
    run_blocks,
)
from .model import (
    MODEL_KINDS,
    KerasModel,
    SegmentationModel,
    SliceNetwork,
    SunUNet,
    TorchModule,
    check_model_fits,
    load_model,
    model_kind,
    register_loader,
)
from .tiling import Grid, TissueMask, detect_tissue, gaussian_weights

__all__ = [
    "DEFAULT_BUDGET",
    "Grid",
    "ImageSource",
    "InferencePlan",
    "KerasModel",
    "RunReport",
    "MODEL_KINDS",
    "SegmentationModel",
    "SliceNetwork",
    "SunUNet",
    "TissueMask",
    "TorchModule",
    "check_model_fits",
    "detect_tissue",
    "finish",
    "gaussian_weights",
    "infer",
    "load_model",
    "model_kind",
    "model_digest",
    "pending_blocks",
    "plan_inference",
    "predict_array",
    "prepare",
    "register_loader",
    "run_blocks",
]
