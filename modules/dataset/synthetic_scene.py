"""Procedural scenes with exact ray distances, for testing against ground truth: rooms, corridors, outdoor streets.

A room is an axis-aligned box around the camera (at the origin, OpenCV axes: y down, so the floor is at
``y = +camera_height``) with furniture-like boxes standing on the floor, each turned about the vertical axis.
Rays are cast analytically (slab tests), so distances are exact to float precision; colours are procedural
textures (checker floor, striped walls, gridded boxes) with Lambert shading. A corridor is a long, narrow room.
An outdoor scene (:class:`OutdoorScene`) is a ground plane (a disc of ``ground_radius`` around the camera) with
buildings (boxes) at 5-100 m and open sky: rays that meet nothing have distance ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..geometry.spherical import erp_directions

__all__ = ["Box", "RoomScene", "OutdoorScene", "make_room", "make_corridor", "make_outdoor", "make_scene", "render_erp",
           "render_perspective", "SCENE_KINDS"]


@dataclass(frozen=True)
class Box:
    """An oriented box standing on the floor: centre (x, z), yaw about y, half sizes, colour."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class RoomScene:
    """Room bounds ``lo``/``hi`` (metres, camera at the origin) and its boxes."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    wall_colours: tuple[tuple[float, float, float], ...] = ()


def make_room(seed: int, num_boxes: tuple[int, int] = (3, 6)) -> RoomScene:
    """A random room: 3-8 m wide and deep, 2.4-3.4 m high, camera 1.2-1.8 m above the floor, 3-6 boxes."""
    rng = np.random.default_rng(seed)
    width, depth = rng.uniform(3.0, 8.0, size=2)
    height = rng.uniform(2.4, 3.4)
    cam_h = rng.uniform(1.2, min(1.8, height - 0.5))
    cx, cz = rng.uniform(0.25, 0.75, size=2)  # where the camera stands, as a fraction of width / depth
    lo = (-cx * width, -(height - cam_h), -cz * depth)
    hi = ((1 - cx) * width, cam_h, (1 - cz) * depth)
    boxes = []
    attempts = 0
    target = int(rng.integers(num_boxes[0], num_boxes[1] + 1))
    while len(boxes) < target and attempts < 200:
        attempts += 1
        hx, hz = rng.uniform(0.2, 0.9, size=2)
        hy = rng.uniform(0.2, 0.75)
        x = rng.uniform(lo[0] + 0.1, hi[0] - 0.1)
        z = rng.uniform(lo[2] + 0.1, hi[2] - 0.1)
        # keep the camera outside every box (with a margin)
        if math.hypot(x, z) < math.hypot(hx, hz) + 0.6:
            continue
        boxes.append(
            Box(
                center=(float(x), float(cam_h - hy), float(z)),
                half=(float(hx), float(hy), float(hz)),
                yaw=float(rng.uniform(0, math.pi)),
                colour=tuple(float(c) for c in rng.uniform(0.2, 0.95, size=3)),
            )
        )
    walls = tuple(tuple(float(c) for c in rng.uniform(0.45, 0.95, size=3)) for _ in range(6))
    return RoomScene(lo=tuple(map(float, lo)), hi=tuple(map(float, hi)), boxes=tuple(boxes), wall_colours=walls)


@dataclass(frozen=True)
class OutdoorScene:
    """Camera ``camera_height`` above a ground disc of ``ground_radius`` (metres), buildings, open sky."""

    camera_height: float
    ground_radius: float
    boxes: tuple[Box, ...] = field(default_factory=tuple)


def make_corridor(seed: int) -> RoomScene:
    """A corridor: 1.8-3 m wide, 15-30 m long, 2.4-3 m high, camera off-centre along it, 2-4 boxes by the walls."""
    rng = np.random.default_rng(seed)
    width, length = rng.uniform(1.8, 3.0), rng.uniform(15.0, 30.0)
    height = rng.uniform(2.4, 3.0)
    cam_h = rng.uniform(1.2, 1.7)
    cx, cz = rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.45)
    lo = (-cx * width, -(height - cam_h), -cz * length)
    hi = ((1 - cx) * width, cam_h, (1 - cz) * length)
    boxes = []
    for _ in range(int(rng.integers(2, 5))):
        hx, hy, hz = rng.uniform(0.15, 0.3), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.8)
        side = lo[0] + hx + 0.02 if rng.uniform() < 0.5 else hi[0] - hx - 0.02
        z = rng.uniform(lo[2] + 1.0, hi[2] - 1.0)
        if abs(z) < hz + 0.8:
            continue
        boxes.append(Box(center=(float(side), float(cam_h - hy), float(z)), half=(float(hx), float(hy), float(hz)),
                         yaw=0.0, colour=tuple(float(c) for c in rng.uniform(0.2, 0.95, size=3))))
    walls = tuple(tuple(float(c) for c in rng.uniform(0.45, 0.95, size=3)) for _ in range(6))
    return RoomScene(lo=tuple(map(float, lo)), hi=tuple(map(float, hi)), boxes=tuple(boxes), wall_colours=walls)


def make_outdoor(seed: int, num_buildings: tuple[int, int] = (10, 16)) -> OutdoorScene:
    """A street-like scene: camera 1.5-1.8 m above the ground, buildings (3-30 m high, 4-30 m wide) whose nearest
    walls are 5-100 m away (distance of their centres log-uniform), a few small objects (3-15 m) near the camera;
    the ground ends 150 m away; the rest is sky."""
    rng = np.random.default_rng(seed)
    cam_h = float(rng.uniform(1.5, 1.8))
    boxes = []
    target = int(rng.integers(num_buildings[0], num_buildings[1] + 1))
    attempts = 0
    while len(boxes) < target and attempts < 500:
        attempts += 1
        small = len(boxes) < 3
        if small:  # cars, kiosks: small boxes near the camera
            hx, hz, hy = rng.uniform(0.8, 2.2), rng.uniform(0.8, 2.2), rng.uniform(0.6, 1.5)
            r = rng.uniform(4.0, 15.0)
        else:
            hx, hz, hy = rng.uniform(2.0, 15.0), rng.uniform(2.0, 15.0), rng.uniform(1.5, 15.0)
            r = math.exp(rng.uniform(math.log(12.0), math.log(100.0)))
        angle = rng.uniform(0, 2 * math.pi)
        x, z = r * math.sin(angle), r * math.cos(angle)
        reach = math.hypot(hx, hz)
        if r - reach < 5.0 and not (small and r - reach > 2.0):
            continue
        if any(math.hypot(x - b.center[0], z - b.center[2]) < reach + math.hypot(b.half[0], b.half[2]) for b in boxes):
            continue
        boxes.append(Box(center=(float(x), float(cam_h - hy), float(z)), half=(float(hx), float(hy), float(hz)),
                         yaw=float(rng.uniform(0, math.pi)), colour=tuple(float(c) for c in rng.uniform(0.25, 0.9, 3))))
    return OutdoorScene(camera_height=cam_h, ground_radius=150.0, boxes=tuple(boxes))


SCENE_KINDS = {"room": make_room, "corridor": make_corridor, "outdoor": make_outdoor}


def make_scene(kind: str, seed: int) -> RoomScene | OutdoorScene:
    """``kind``: room | corridor | outdoor."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"scene kind must be one of {sorted(SCENE_KINDS)}, got {kind!r}")
    return SCENE_KINDS[kind](seed)


def _rot_y(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def cast(scene: RoomScene | OutdoorScene, dirs: np.ndarray, origin=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays from ``origin`` (the scene's coordinates; default its origin, where the camera stands).

    Args:
        dirs: [N, 3] unit directions.
        origin: [3] ray origin (inside the room; above the ground outdoors).
    Returns:
        distance [N] (float64, exact; ``inf`` where a ray meets nothing), rgb [N, 3] in [0, 1].
    """
    origin = np.asarray(origin, dtype=np.float64)
    if isinstance(scene, OutdoorScene):
        return _cast_outdoor(scene, dirs, origin)
    lo, hi = np.array(scene.lo) - origin, np.array(scene.hi) - origin
    with np.errstate(divide="ignore", invalid="ignore"):
        # exit distance of the room box along each axis
        t_axis = np.where(dirs > 0, hi / dirs, np.where(dirs < 0, lo / dirs, np.inf))
    axis = np.argmin(t_axis, axis=1)
    t = t_axis[np.arange(len(dirs)), axis]
    sign = np.sign(dirs[np.arange(len(dirs)), axis])
    # wall id: 0/1 = x lo/hi, 2/3 = y lo (ceiling)/hi (floor), 4/5 = z lo/hi
    surface = 2 * axis + (sign > 0)
    normal = np.zeros_like(dirs)
    normal[np.arange(len(dirs)), axis] = -sign
    colour_id = surface.copy()
    _cast_boxes(scene.boxes, dirs, t, normal, colour_id, origin)
    points = origin + dirs * t[:, None]
    rgb = _shade(scene, points, normal, colour_id)
    return t, rgb


def _cast_boxes(boxes, dirs: np.ndarray, t: np.ndarray, normal: np.ndarray, colour_id: np.ndarray,
                origin: np.ndarray = np.zeros(3)) -> None:
    """Intersect the rays from ``origin`` with the boxes; where a box is nearer than ``t``, update t, normal and
    colour_id (6 + k) in place."""
    for k, box in enumerate(boxes):
        R = _rot_y(box.yaw)  # world_from_box
        o = (origin - np.array(box.center)) @ R  # ray origin in the box frame: R^T (origin - c)
        d = dirs @ R
        half = np.array(box.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near = np.max(tmin, axis=1)
        t_far = np.min(tmax, axis=1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < t)
        if not hit.any():
            continue
        face_axis = np.argmax(tmin[hit], axis=1)
        n_box = np.zeros((hit.sum(), 3))
        n_box[np.arange(hit.sum()), face_axis] = -np.sign(d[hit][np.arange(hit.sum()), face_axis])
        t[hit] = t_near[hit]
        normal[hit] = n_box @ R.T
        colour_id[hit] = 6 + k


def _cast_outdoor(scene: OutdoorScene, dirs: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 1] > 0, (scene.camera_height - origin[1]) / dirs[:, 1], np.inf)
        foot = origin[[0, 2]] + t_ground[:, None] * dirs[:, [0, 2]]
    ground = np.isfinite(t_ground) & (np.hypot(foot[:, 0], foot[:, 1]) <= scene.ground_radius)
    t = np.where(ground, t_ground, np.inf)
    normal = np.zeros_like(dirs)
    normal[:, 1] = -1.0
    colour_id = np.where(ground, 3, -1)  # 3: ground, -1: sky
    _cast_boxes(scene.boxes, dirs, t, normal, colour_id, origin)
    rgb = np.zeros_like(dirs)
    sky = ~np.isfinite(t)
    # sky: a vertical gradient (pale at the horizon) with a few soft clouds
    up = np.clip(-dirs[:, 1], 0, 1)
    cloud = 0.5 + 0.5 * np.sin(7 * dirs[:, 0] + 3 * np.sin(5 * dirs[:, 2])) * np.sin(6 * dirs[:, 2] - 4 * dirs[:, 1])
    sky_rgb = np.stack((0.75 - 0.4 * up, 0.85 - 0.3 * up, 0.98 - 0.05 * up), 1)
    sky_rgb = sky_rgb + (0.25 * np.clip(cloud - 0.6, 0, 1))[:, None]
    rgb[sky] = np.clip(sky_rgb[sky], 0, 1)
    surf = ~sky
    points = origin + dirs[surf] * t[surf, None]
    base = np.where((colour_id[surf] == 3)[:, None], np.array([0.42, 0.41, 0.4]), 0.0)
    for k, box in enumerate(scene.boxes):
        base[colour_id[surf] == 6 + k] = box.colour
    x, y, z = points.T
    is_ground = colour_id[surf] == 3
    tiles = (np.floor(x / 2.0) + np.floor(z / 2.0)) % 2
    windows = (np.sin(x * 1.3) > 0.3) & (np.sin(z * 1.3) > 0.3) | (np.sin(y * 1.6) > 0.6)
    pattern = np.where(is_ground, 0.8 + 0.2 * tiles, np.where(windows, 0.6, 1.0))
    light = np.array([0.3, -0.8, 0.5])
    light /= np.linalg.norm(light)
    lambert = 0.55 + 0.45 * np.clip(normal[surf] @ light, 0.0, 1.0)
    rgb[surf] = np.clip(base * pattern[:, None] * lambert[:, None], 0, 1)
    return t, rgb


def _shade(scene: RoomScene, points: np.ndarray, normal: np.ndarray, colour_id: np.ndarray) -> np.ndarray:
    base = np.zeros_like(points)
    walls = np.array(scene.wall_colours) if scene.wall_colours else np.full((6, 3), 0.8)
    for s in range(6):
        m = colour_id == s
        base[m] = walls[s]
    for k, box in enumerate(scene.boxes):
        base[colour_id == 6 + k] = box.colour
    x, y, z = points.T
    floor = colour_id == 3
    checker = (np.floor(x * 2.0) + np.floor(z * 2.0)) % 2
    pattern = np.where(floor, 0.65 + 0.35 * checker, 1.0)
    wall = colour_id < 6
    stripes = 0.85 + 0.15 * np.sin((x + z) * 6.0) * np.sin(y * 3.0)
    pattern = np.where(wall & ~floor, stripes, pattern)
    box = colour_id >= 6
    grid = (np.abs(np.sin(x * 9.0)) > 0.97) | (np.abs(np.sin(y * 9.0)) > 0.97) | (np.abs(np.sin(z * 9.0)) > 0.97)
    pattern = np.where(box & grid, 0.55, pattern)
    light = np.array([0.3, -0.8, 0.5])
    light /= np.linalg.norm(light)
    lambert = 0.55 + 0.45 * np.clip(normal @ light, 0.0, 1.0)
    return np.clip(base * pattern[:, None] * lambert[:, None], 0.0, 1.0)


def render_erp(scene: RoomScene, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular render, W = 2 H.

    Returns:
        rgb [H, W, 3] float in [0, 1], distance [H, W] float32 (exact ray distance at each pixel centre; ``inf``
        where the ray meets nothing, the sky of an outdoor scene).
    """
    import torch

    dirs = erp_directions(height, 2 * height, dtype=torch.float64).reshape(-1, 3).numpy()
    t, rgb = cast(scene, dirs)
    return rgb.reshape(height, 2 * height, 3), t.reshape(height, 2 * height).astype(np.float32)


def render_perspective(
    scene: RoomScene, K: np.ndarray, height: int, width: int, R_world_from_cam: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole render with intrinsics K [3, 3] (pixel centres at integer + 0.5 convention: u = fx x/z + cx).

    Returns:
        rgb [H, W, 3] in [0, 1], depth [H, W] float32 (z in the camera).
    """
    R = np.eye(3) if R_world_from_cam is None else np.asarray(R_world_from_cam, dtype=np.float64)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    cam = np.stack((x, y, np.ones_like(x)), -1).reshape(-1, 3)
    norm = np.linalg.norm(cam, axis=1)
    dirs = (cam / norm[:, None]) @ R.T
    t, rgb = cast(scene, dirs)
    depth = t / norm
    return rgb.reshape(height, width, 3), depth.reshape(height, width).astype(np.float32)
