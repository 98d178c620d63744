"""A small CPU Gaussian-splat rasteriser for tests: the 3DGS projection (EWA with the local affine Jacobian and the
0.3 px^2 low-pass dilation that reference renderers and web viewers add), alpha = min(0.99, opacity * G),
contributions below 1/255 skipped. Only the transmittance left for the background is computed: it is
order-independent (a product over every splat covering the pixel), so no depth sort is needed."""

from __future__ import annotations

import numpy as np


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """[N, 4] (w, x, y, z) -> [N, 3, 3]."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)


def cube_rotations() -> list[np.ndarray]:
    """world_from_camera rotations (columns: camera x, y, z in the world) of the six cube faces (OpenCV axes)."""
    def cam(z, y):
        z, y = np.array(z, float), np.array(y, float)
        return np.stack([np.cross(y, z), y, z], axis=1)
    return [cam([0, 0, 1], [0, 1, 0]), cam([1, 0, 0], [0, 1, 0]), cam([0, 0, -1], [0, 1, 0]),
            cam([-1, 0, 0], [0, 1, 0]), cam([0, -1, 0], [0, 0, 1]), cam([0, 1, 0], [0, 0, -1])]


def transmittance(means, scales, quats, opacities, world_from_cam, size: int) -> np.ndarray:
    """Background transmittance [size, size] of a 90 deg pinhole camera at the origin (OpenCV: looks along +z)."""
    f = c = size / 2.0
    t = means @ world_from_cam  # camera coordinates
    # splats whose centre is inside the frustum widened by a margin (3DGS culls at 1.3x the field of view)
    front = (t[:, 2] > 1e-3) & (np.abs(t[:, 0]) < 1.3 * t[:, 2]) & (np.abs(t[:, 1]) < 1.3 * t[:, 2])
    t, scales, quats, opacities = t[front], scales[front], quats[front], opacities[front]
    rot = world_from_cam.T @ quat_to_matrix(quats)  # splat axes in the camera frame
    cov = rot @ (scales[:, :, None] ** 2 * np.swapaxes(rot, 1, 2))
    x, y, z = t.T
    J = np.zeros((len(t), 2, 3))
    J[:, 0, 0] = f / z
    J[:, 0, 2] = -f * x / z**2
    J[:, 1, 1] = f / z
    J[:, 1, 2] = -f * y / z**2
    cov2 = J @ cov @ np.swapaxes(J, 1, 2) + 0.3 * np.eye(2)
    a, b, d = cov2[:, 0, 0], cov2[:, 0, 1], cov2[:, 1, 1]
    det = a * d - b * b
    conic = np.stack([d / det, -b / det, a / det], axis=1)
    mid = 0.5 * (a + d)
    radius = np.ceil(3.0 * np.sqrt(mid + np.sqrt(np.maximum(mid * mid - det, 0.1)))).astype(int)
    u, v = f * x / z + c, f * y / z + c
    on = (u + radius > 0) & (u - radius < size) & (v + radius > 0) & (v - radius < size)
    log_t = np.zeros(size * size)
    for r in np.unique(radius[on]):
        sel = np.nonzero(on & (radius == r))[0]
        off = np.arange(-r, r + 1)
        px = np.floor(u[sel])[:, None, None] + off[None, None, :]  # pixel column indices
        py = np.floor(v[sel])[:, None, None] + off[None, :, None]
        dx = px + 0.5 - u[sel][:, None, None]  # pixel centres at +0.5
        dy = py + 0.5 - v[sel][:, None, None]
        q = conic[sel, 0, None, None] * dx * dx + 2 * conic[sel, 1, None, None] * dx * dy + conic[sel, 2, None, None] * dy * dy
        alpha = np.minimum(0.99, opacities[sel][:, None, None] * np.exp(-0.5 * q))
        ok = (alpha >= 1.0 / 255.0) & (px >= 0) & (px < size) & (py >= 0) & (py < size)
        ok = ok & np.ones_like(px, dtype=bool)
        idx = (np.broadcast_to(py, ok.shape)[ok] * size + np.broadcast_to(px, ok.shape)[ok]).astype(np.int64)
        np.add.at(log_t, idx, np.log1p(-alpha[ok]))
    return np.exp(log_t).reshape(size, size)
