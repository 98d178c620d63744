"""A camera moving through a procedural scene (room, corridor, outdoor street): equirect frames with exact distances
and poses, for testing video.

The camera walks a straight line of ``path_length`` metres (the direction with the most clearance from walls, the
edge of the outdoor ground and the boxes), turning by ``yaw_deg`` about the vertical axis and nodding by ``pitch_deg`` (a slow
sinusoid) on the way; it bobs ``bob`` metres up and down. Every frame is ray-cast exactly
(:func:`modules.dataset.synthetic_scene.cast`), so each frame's distance map is exact.

Poses use OpenCV axes (y down). ``R_world_from_cam`` [3, 3] and ``position`` [3] (world = room coordinates) of frame
t map a camera point X to the world as ``R X + position``. :func:`relative_pose` gives the motion of frame t into
frame s, the quantity a video pipeline estimates from the distance maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..geometry.spherical import erp_directions
from .synthetic_scene import OutdoorScene, RoomScene, cast

__all__ = ["CameraPath", "plan_path", "render_frame", "relative_pose", "rot_y", "rot_x"]


def rot_y(angle: float) -> np.ndarray:
    """Rotation about +y (down) by ``angle`` radians: turns +z towards +x (a turn to the right seen from above)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class CameraPath:
    """Per-frame poses: ``positions`` [N, 3] and ``rotations`` [N, 3, 3] (R_world_from_cam), ``clearance`` (metres
    from the path to the nearest wall or box footprint)."""

    positions: np.ndarray
    rotations: np.ndarray
    clearance: float

    def __len__(self) -> int:
        return len(self.positions)


def _box_clearance(scene: RoomScene | OutdoorScene, xz: np.ndarray) -> np.ndarray:
    """Distance [N] in the floor plane from points ``xz`` [N, 2] to the nearest box footprint (negative inside)."""
    best = np.full(len(xz), np.inf)
    for box in scene.boxes:
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        dx, dz = xz[:, 0] - box.center[0], xz[:, 1] - box.center[2]
        # into the box frame (R^T of rot_y(yaw) restricted to x, z)
        bx, bz = c * dx - s * dz, s * dx + c * dz
        qx, qz = np.abs(bx) - box.half[0], np.abs(bz) - box.half[2]
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qz, 0))
        inside = np.minimum(np.maximum(qx, qz), 0)
        best = np.minimum(best, outside + inside)
    return best


def plan_path(scene: RoomScene | OutdoorScene, num_frames: int, path_length: float = 2.0, yaw_deg: float = 90.0,
              pitch_deg: float = 4.0, bob: float = 0.02, min_clearance: float = 0.3,
              directions: int = 36) -> CameraPath:
    """A straight walk from the room's origin with the most clearance (see module docstring).

    Raises:
        UserError: no direction keeps ``min_clearance`` metres from walls and boxes over ``path_length``.
    """
    if num_frames < 2:
        raise UserError(f"a camera path needs at least 2 frames, got {num_frames}")
    s = np.linspace(0.0, 1.0, num_frames)
    best = (-np.inf, None)
    for k in range(directions):
        a = 2 * math.pi * k / directions
        xz = np.stack((s * path_length * math.sin(a), s * path_length * math.cos(a)), -1)
        if isinstance(scene, OutdoorScene):  # stay on the ground disc
            walls = scene.ground_radius - np.hypot(xz[:, 0], xz[:, 1])
        else:
            lo, hi = scene.lo, scene.hi
            walls = np.minimum.reduce([xz[:, 0] - lo[0], hi[0] - xz[:, 0], xz[:, 1] - lo[2], hi[2] - xz[:, 1]])
        clearance = float(np.minimum(walls, _box_clearance(scene, xz)).min())
        if clearance > best[0]:
            best = (clearance, a)
    clearance, heading = best
    if clearance < min_clearance:
        raise UserError(f"no straight {path_length} m path keeps {min_clearance} m from walls and boxes in this room "
                        f"(best {clearance:.2f} m); try another seed or a shorter path")
    positions = np.stack((s * path_length * math.sin(heading), -bob * np.sin(2 * math.pi * s),
                          s * path_length * math.cos(heading)), -1)
    rotations = np.stack([rot_y(heading + math.radians(yaw_deg) * si) @ rot_x(math.radians(pitch_deg)
                                                                               * math.sin(2 * math.pi * si))
                          for si in s])
    return CameraPath(positions=positions, rotations=rotations, clearance=clearance)


def render_frame(scene: RoomScene | OutdoorScene, path: CameraPath, index: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirect render of frame ``index`` (W = 2 H).

    Returns:
        rgb [H, W, 3] float in [0, 1], distance [H, W] float32 (exact ray distance from the camera at each pixel
        centre).
    """
    import torch

    dirs = erp_directions(height, 2 * height, dtype=torch.float64).reshape(-1, 3).numpy()
    t, rgb = cast(scene, dirs @ path.rotations[index].T, origin=path.positions[index])
    return rgb.reshape(height, 2 * height, 3), t.reshape(height, 2 * height).astype(np.float32)


def relative_pose(path: CameraPath, src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """(R [3, 3], T [3]) with X_dst = R X_src + T for a point seen in camera ``src`` and in camera ``dst``."""
    Rd, Rs = path.rotations[dst], path.rotations[src]
    return Rd.T @ Rs, Rd.T @ (path.positions[src] - path.positions[dst])
