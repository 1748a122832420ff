"""Planes in world coordinates: the geometry of real and virtual sections.

A :class:`Plane` lives in the framework's world frame (``docs/io.md``, "World
geometry"): positions in micrometres, listed ``(z, y, x)`` like the array axes. It
carries its own in-plane frame, so a section image of the plane is defined without
ambiguity: image rows run along ``v``, columns along ``u``, and the plane's ``point``
is the centre of the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError

#: The default cutting axis: the world z axis (the axis of the phantom's screw).
Z_AXIS = (1.0, 0.0, 0.0)


def _unit(vector: ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise InputError(
            f"{name}: {list(np.ravel(vector))} is not a vector of 3 finite numbers (z y x)"
        )
    length = float(np.linalg.norm(v))
    if length < 1e-12:
        raise InputError(f"{name}: is the zero vector; expected a direction (z y x)")
    return v / length


def rotation_between(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """The smallest rotation (3x3) that turns unit vector ``a`` into unit vector ``b``.

    Examples
    --------
    >>> r = rotation_between((1, 0, 0), (0, 0, 1))
    >>> np.round(r @ np.array([1.0, 0, 0]), 6).tolist()
    [0.0, 0.0, 1.0]
    """
    a = _unit(a, "a")
    b = _unit(b, "b")
    axis = np.cross(a, b)
    sin = float(np.linalg.norm(axis))
    cos = float(np.dot(a, b))
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # Opposite vectors: half a turn about any axis perpendicular to a.
        perp = np.cross(a, [0.0, 1.0, 0.0] if abs(a[1]) < 0.9 else [0.0, 0.0, 1.0])
        perp /= np.linalg.norm(perp)
        return 2 * np.outer(perp, perp) - np.eye(3)
    k = axis / sin
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * kx + (1 - cos) * kx @ kx


def normal_from_angles(tilt: float, azimuth: float, axis: ArrayLike = Z_AXIS) -> np.ndarray:
    """Unit normal tilted by ``tilt`` degrees from ``axis``, towards ``azimuth`` degrees.

    For the default axis (world z) the normal is ``(cos t, sin t sin a, sin t cos a)``
    in ``(z, y, x)``: azimuth 0 tilts towards +x, 90 towards +y. For another axis the
    same construction is rotated (smallest rotation) from z onto that axis.

    Examples
    --------
    >>> np.round(normal_from_angles(90, 0), 6).tolist()
    [0.0, 0.0, 1.0]
    """
    t, a = math.radians(tilt), math.radians(azimuth)
    n = np.array([math.cos(t), math.sin(t) * math.sin(a), math.sin(t) * math.cos(a)])
    return rotation_between(Z_AXIS, axis) @ n


def angles_from_normal(
    normal: Sequence[float], axis: Sequence[float] = Z_AXIS
) -> tuple[float, float]:
    """Inverse of :func:`normal_from_angles`: ``(tilt, azimuth)`` in degrees.

    Examples
    --------
    >>> [round(v, 6) for v in angles_from_normal(normal_from_angles(20, 30))]
    [20.0, 30.0]
    """
    n = rotation_between(axis, Z_AXIS) @ _unit(normal, "normal")
    tilt = math.degrees(math.acos(max(-1.0, min(1.0, float(n[0])))))
    azimuth = math.degrees(math.atan2(float(n[1]), float(n[2]))) % 360.0 if tilt > 1e-9 else 0.0
    return tilt, azimuth


def angle_between(n1: ArrayLike, n2: ArrayLike) -> float:
    """Angle in degrees between two plane normals, ignoring their sign (0..90).

    Examples
    --------
    >>> round(angle_between((1, 0, 0), (-1, 0, 0)), 6)
    0.0
    """
    c = abs(float(np.dot(_unit(n1, "normal"), _unit(n2, "normal"))))
    return math.degrees(math.acos(min(1.0, c)))


@dataclass(frozen=True)
class Plane:
    """A plane in world coordinates (µm, listed ``(z, y, x)``) with its in-plane frame.

    Parameters
    ----------
    point : sequence of 3 float
        A point of the plane; the centre of section images cut along it.
    normal : sequence of 3 float
        The plane normal (normalised on construction).
    u : sequence of 3 float, optional
        Direction of image columns (the section's x axis). By default the world x
        axis turned by the smallest rotation from world z onto ``normal``, so a plane
        with normal z gives images in the orientation of an axial slice.
    v : sequence of 3 float, optional
        Direction of image rows (the section's y axis); by default ``normal x u``
        made right-handed like the world's ``(z, y, x)``.

    Examples
    --------
    >>> p = Plane((10.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    >>> p.u.tolist(), p.v.tolist()
    ([0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
    >>> p.world((2.0, 3.0)).tolist()       # 2 µm along v (rows), 3 µm along u (columns)
    [10.0, 2.0, 3.0]
    """

    point: Any
    normal: Any
    u: Any = None
    v: Any = None

    def __post_init__(self) -> None:
        point = np.asarray(self.point, dtype=np.float64).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(
                f"plane point: {list(np.ravel(self.point))} is not 3 finite numbers (z y x, µm)"
            )
        normal = _unit(self.normal, "plane normal")
        if self.u is None:
            rot = rotation_between(Z_AXIS, normal)
            u = rot @ np.array([0.0, 0.0, 1.0])
        else:
            u = _unit(self.u, "plane u")
            u = u - np.dot(u, normal) * normal
            u = _unit(u, "plane u (in the plane)")
        # (normal, v, u) play the roles of the world's (z, y, x): same handedness.
        v = np.cross(u, normal)
        v = v / np.linalg.norm(v)
        if self.v is not None and np.dot(_unit(self.v, "plane v"), v) < 0.999:
            raise InputError("plane v: must be normal x u (a right-handed frame normal, v, u)")
        for name, value in (("point", point), ("normal", normal), ("u", u), ("v", v)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def from_angles(
        cls,
        tilt: float,
        azimuth: float,
        offset: float,
        centre: ArrayLike,
        axis: ArrayLike = Z_AXIS,
    ) -> Plane:
        """The plane with normal :func:`normal_from_angles` through ``centre + offset * normal``.

        Examples
        --------
        >>> Plane.from_angles(0, 0, 5.0, (0, 0, 0)).point.tolist()
        [5.0, 0.0, 0.0]
        """
        n = normal_from_angles(tilt, azimuth, axis)
        return cls(np.asarray(centre, float) + offset * n, n)

    def world(self, vu: Any) -> np.ndarray:
        """World positions of in-plane coordinates ``(..., 2)`` = (along v, along u) in µm."""
        vu = np.asarray(vu, dtype=np.float64)
        return self.point + vu[..., :1] * self.v + vu[..., 1:2] * self.u

    def offset_from(self, centre: Sequence[float]) -> float:
        """Signed distance (µm) of the plane from ``centre`` along the normal."""
        return float(np.dot(self.point - np.asarray(centre, float), self.normal))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (world µm, ``(z, y, x)``)."""
        return {
            "point_um": self.point.tolist(),
            "normal": self.normal.tolist(),
            "u": self.u.tolist(),
            "v": self.v.tolist(),
            "frame": "world LPS, micrometres, listed (z, y, x); image rows along v, columns along u, point = image centre",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plane:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["point_um"], data["normal"], data.get("u"))
        except (KeyError, TypeError) as exc:
            raise InputError(f"plane: {exc}; expected keys point_um, normal (and u)") from None


def volume_centre(volume: Any) -> np.ndarray:
    """World position (µm, z y x) of the centre of a volume's voxel grid."""
    shape = np.asarray(volume.spatial_shape[:3], dtype=np.float64)
    return (volume.affine @ np.append((shape - 1) / 2, 1.0))[:3]


def volume_corners(volume: Any) -> np.ndarray:
    """World positions (8, 3) of the outer corners of a volume's voxel grid."""
    shape = np.asarray(volume.spatial_shape[:3], dtype=np.float64)
    idx = (
        np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
        * shape
        - 0.5
    )
    return (np.c_[idx, np.ones(8)] @ volume.affine.T)[:, :3]
