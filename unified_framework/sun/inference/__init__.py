"""Multi-axis prediction of SUN: in memory, or resumable and splittable via a work directory."""

from ..votes import pack_votes
from .accumulator import MemoryAccumulator, ZarrAccumulator, fuse
from .predictor import RunStats, SlicePredictor, SunPrediction, VolumeSource, predict_volume
from .workdir import Outputs, Plan, WorkDir, make_plan, merge_to_files, predict_to_files

__all__ = [
    "MemoryAccumulator",
    "Outputs",
    "Plan",
    "RunStats",
    "SlicePredictor",
    "SunPrediction",
    "VolumeSource",
    "WorkDir",
    "ZarrAccumulator",
    "fuse",
    "make_plan",
    "merge_to_files",
    "pack_votes",
    "predict_to_files",
    "predict_volume",
]
