"""Registration results for the dashboard: find result folders, blend and checkerboard slices, make a sample."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paths


@dataclass
class RegistrationFolder:
    """A folder written by ``mdlma register`` (it holds ``quality.json``)."""

    folder: Path
    report: dict

    @property
    def name(self) -> str:
        return str(self.folder)

    def file(self, role: str) -> Path | None:
        """A result file (``warped``, ``warped_labels``, ``jacobian``, ``field``) or None."""
        name = self.report.get("files", {}).get(role)
        return self.folder / name if name and (self.folder / name).exists() else None

    def source(self, role: str, roots: list[Path]) -> Path | None:
        """An input (``fixed``, ``moving``, ...) if it still exists inside the allowed roots."""
        text = self.report.get("sources", {}).get(role)
        if not text:
            return None
        kept = paths.allowed([Path(self.folder, text)], roots)  # absolute sources ignore the folder
        return kept[0] if kept and kept[0].exists() else None


def find_results(folder: Path, limit: int = 100) -> list[RegistrationFolder]:
    """Result folders below ``folder`` (newest first); unreadable reports are skipped."""
    found = []
    for report_path in paths.walk_files(
        folder, lambda p: p.name == "quality.json" and p.is_file(), max_depth=5, limit=limit
    ):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and "method" in report and "jacobian" in report:
            found.append(RegistrationFolder(report_path.parent, report))
    return sorted(found, key=lambda r: -r.folder.stat().st_mtime)


def blend(fixed: np.ndarray, warped: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * fixed + alpha * warped`` of two uint8 grey slices, as RGB (0: fixed, 1: warped)."""
    alpha = float(np.clip(alpha, 0.0, 1.0))
    grey = (1 - alpha) * fixed.astype(np.float32) + alpha * warped.astype(np.float32)
    return np.repeat(np.clip(grey.round(), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def checkerboard(fixed: np.ndarray, warped: np.ndarray, tile: int) -> np.ndarray:
    """Alternating square tiles of the fixed and the warped grey slice, as RGB."""
    tile = max(1, int(tile))
    rows, cols = np.indices(fixed.shape)
    use_fixed = ((rows // tile) + (cols // tile)) % 2 == 0
    grey = np.where(use_fixed, fixed, warped).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def make_sample_registration(
    root: Path, shape: tuple[int, int, int], seed: int, multimodal: bool
) -> Path:
    """Write a phantom pair and its convexAdam registration below ``root/registrations``."""
    from unified_framework.data import make_registration_pair
    from unified_framework.io import write_volume
    from unified_framework.registration import register_volumes, write_outputs
    from unified_framework.registration.convexadam import preset
    from unified_framework.registration.quality import write_landmarks

    name = f"pair-{'x'.join(map(str, shape))}-seed{seed}{'-multimodal' if multimodal else ''}"
    folder = root / "registrations" / name
    folder.mkdir(parents=True, exist_ok=True)
    pair = make_registration_pair(shape, seed=seed, displacement=4, multimodal=multimodal)
    for role in ("fixed", "moving", "fixed_labels", "moving_labels"):
        write_volume(folder / f"{role}.tif", getattr(pair, role), spacing=pair.spacing)
    write_landmarks(folder / "landmarks.csv", pair.fixed_points, pair.moving_points)
    result = register_volumes(
        pair.fixed,
        pair.moving,
        pair.spacing,
        "convexadam",
        prealign="none",
        device="cpu",
        params=preset("fast"),  # a demonstration: the quick preset
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
        landmarks=(pair.fixed_points, pair.moving_points),
    )
    sources = {
        role: str(folder / f"{role}.tif")
        for role in ("fixed", "moving", "fixed_labels", "moving_labels")
    }
    return write_outputs(
        folder / "convexadam",
        result,
        sources={**sources, "landmarks": str(folder / "landmarks.csv")},
    )
