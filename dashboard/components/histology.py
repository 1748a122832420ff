"""Data logic of the Virtual histology page: find match results, blend and checkerboard images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components import paths
from unified_framework.errors import InputError

#: What ``mdlma histology match --out DIR`` writes (the page lists folders holding all of it).
MATCH_FILES = ("match.json", "virtual_section.tif", "section_on_virtual.tif")


def find_matches(root: Path) -> list[Path]:
    """Folders below ``root`` (up to 4 levels) holding a complete ``mdlma histology match`` result."""
    reports = paths.walk_files(root, lambda p: p.name == "match.json" and p.is_file(), max_depth=4)
    return sorted(r.parent for r in reports if all((r.parent / f).is_file() for f in MATCH_FILES))


def load_match(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """The report, the virtual section scaled to 0..1 and the mapped section as grey 0..1 (stain dark = 1)."""
    from unified_framework.image import to_grey
    from unified_framework.io import read_volume

    try:
        report = json.loads((folder / "match.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'match.json'}: not a readable match report ({exc})") from None
    virtual = np.asarray(read_volume(folder / "virtual_section.tif").data, dtype=np.float32)
    lo, hi = np.percentile(virtual, [1, 99])
    virtual = np.clip((virtual - lo) / max(hi - lo, 1e-9), 0, 1)
    section = read_volume(folder / "section_on_virtual.tif")
    grey = np.asarray(
        to_grey(section).data if section.axes == "yxc" else section.data, dtype=np.float32
    )
    grey = 1 - np.clip(grey / max(float(grey.max()), 1e-9), 0, 1)
    return report, virtual, grey


def blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) a + alpha b``.

    Examples
    --------
    >>> blend(np.zeros(2), np.ones(2), 0.25).tolist()
    [0.25, 0.25]
    """
    return (1 - alpha) * a + alpha * b


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int) -> np.ndarray:
    """``a`` and ``b`` in alternating squares, ``tiles`` squares along the longer side.

    Examples
    --------
    >>> checkerboard(np.zeros((2, 2)), np.ones((2, 2)), 2).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    size = max(1, int(np.ceil(max(a.shape) / max(1, tiles))))
    rows, cols = np.indices(a.shape)
    return np.where(((rows // size + cols // size) % 2).astype(bool), b, a)
