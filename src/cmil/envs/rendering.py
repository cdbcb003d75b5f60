"""Fast headless MuJoCo rendering and the one-renderer-per-process guard.

Software (Mesa EGL) rendering of the default visuals costs ~1 s a frame for the kitchen; shadows,
reflections and multisampling dominate that cost and are invisible at 64x64. `apply_fast_visuals`
turns them off on the MjModel before any renderer is built, and sizes the offscreen buffer to the
frame so no pixels beyond the 64x64 image are drawn.

Several live MuJoCo GL contexts in one process interfere: freeing one can blank the frames of the
others. `RendererGuard` makes that impossible to hit silently: a process holds at most one open
rendering env; building a second while the first is open raises a clear error.
"""

from __future__ import annotations

import os
import weakref

import gymnasium as gym

os.environ.setdefault("MUJOCO_GL", "egl")


def apply_fast_visuals(model, width: int, height: int | None = None) -> None:
    """Turn off shadows, reflections and multisampling; size the offscreen buffer to the frame."""
    height = width if height is None else height
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = width
    model.vis.global_.offheight = height
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0


class RendererGuard:
    """Tracks the single open rendering env of this process."""

    _owner: weakref.ref | None = None

    @classmethod
    def claim(cls, env: object) -> None:
        current = cls._owner() if cls._owner is not None else None
        if current is not None and current is not env:
            raise RuntimeError(
                f"a rendering env ({type(current).__name__}) is already open in this process; MuJoCo GL "
                "contexts interfere (freeing one can blank the others' frames). Close it first, or use "
                "one env per process (e.g. gymnasium.vector.AsyncVectorEnv).")
        cls._owner = weakref.ref(env)

    @classmethod
    def release(cls, env: object) -> None:
        if cls._owner is not None and cls._owner() is env:
            cls._owner = None

    @classmethod
    def busy(cls) -> bool:
        return cls._owner is not None and cls._owner() is not None


class GuardedRender(gym.Wrapper):
    """Wraps a rendering env: claims the process's renderer on creation, releases it on close."""

    def __init__(self, env: gym.Env):
        RendererGuard.claim(self)
        super().__init__(env)
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                super().close()
            finally:
                RendererGuard.release(self)

    def __del__(self):  # an env dropped without close() must not block the next one forever
        RendererGuard.release(self)


class OffscreenCamera:
    """Renders 64x64-style frames of an MjModel/MjData with the fast visual settings.

    Give either `camera` (a named/indexed camera of the model) or a free camera
    (`distance`, `azimuth`, `elevation`, `lookat`), as in the paper's camera descriptions.
    """

    def __init__(self, model, size: int, camera: str | int | None = None, distance: float | None = None,
                 azimuth: float | None = None, elevation: float | None = None,
                 lookat: tuple[float, float, float] | None = None):
        import mujoco
        import numpy as np

        apply_fast_visuals(model, size)
        self.renderer = mujoco.Renderer(model, size, size)
        if camera is not None:
            self.camera: object = camera
        else:
            cam = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(model, cam)
            if distance is not None:
                cam.distance = distance
            if azimuth is not None:
                cam.azimuth = azimuth
            if elevation is not None:
                cam.elevation = elevation
            if lookat is not None:
                cam.lookat[:] = np.asarray(lookat, float)
            self.camera = cam

    def render(self, data):
        """The current frame as uint8 (size, size, 3)."""
        self.renderer.update_scene(data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
