"""ShadowHand Baoding balls from pixels (the paper's dexterous task, after PDDM's Baoding env).

Scene: gymnasium-robotics' Shadow hand (its shipped `robot.xml`, `shared.xml` and STL meshes, included
by absolute path at load time, nothing copied) with the palm facing up and level (fingers along world +x,
thumb towards -y, little finger towards +y), plus two free balls of radius 0.019 m. The hand is placed so
that the centre of its palm face is at `PALM_CENTRE`, 8 cm above z = 0: a resting ball's centre is then
near z = 0.10, so the paper's drop rule "a ball below z = 0.06" applies unchanged (4 cm below the resting
height; no pose on the hand holds a ball that low). The shipped wrist servo sags under the hand's weight;
the home posture offsets it so the palm leans ~0.03 rad towards the cupped fingers (see `TILT`).

Control: the shipped hand has 20 position actuators (2 wrist + 18 finger; each finger's two distal joints
are coupled by a tendon, which is how its 24 joints are driven by 20 actuators, whereas the paper's hand
actuates all 24). Actions are 20-dim in [-1, 1], mapped linearly to each actuator's ctrl range
(-1 -> low, +1 -> high) in the model's actuator order (`BaodingEnv.actuator_names`: WRJ1, WRJ0, FFJ3-1,
MFJ3-1, RFJ3-1, LFJ4-1, THJ4-0). 0.0025 s x 40 substeps = 0.1 s a step; 75 steps an episode.

Targets: both targets move counter-clockwise (seen from above) on a circle of radius `TARGET_RADIUS`
about `TARGET_CENTRE`, opposite each other, one revolution every 60 steps. Distances are measured in
the horizontal (x, y) plane: the palm fixes the balls' height.

Success (see docs/baoding.md): an episode succeeds if no ball dropped, the mean over its steps of the
mean ball-to-target distance is below `SUCCESS_DISTANCE` (1.5 cm) and the pair turned counter-clockwise
by at least the targets' turn less half a revolution (`required_rotation`). `info["success"]` is that
criterion on the steps so far, reported only from step `success_min_steps` on (default: the episode
length), so it is False before the end and at the last step equals episode success: "success at any
step" and "success at the last step" agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cmil.envs.rendering import GuardedRender, OffscreenCamera

os.environ.setdefault("MUJOCO_GL", "egl")

EPISODE_LENGTH = 75
TIMESTEP = 0.0025
FRAME_SKIP = 40
STEPS_PER_REVOLUTION = 60
BALL_RADIUS = 0.019
BALL_MASS = 0.03
BALL_FRICTION = 1.0
TARGET_RADIUS = 0.02
DROP_Z = 0.06
SUCCESS_DISTANCE = 0.015
WRIST_HIGH = -0.15
"""The wrist counts as 'too high' when its flexion joint WRJ0 is extended below this (rad): the wrist
end of the palm then rises above the fingers by more than the scene's built-in tilt."""

TILT = 0.0
"""Extra rotation (rad) of the whole hand about the world x axis (0: the palm plane is level). The shipped
wrist servo (kp 5) sags ~0.07 rad under the hand's weight; the home posture commands WRJ0 = 0.04, which
leaves the palm ~0.03 rad lower at the finger end, so resting balls lean gently on the cupped fingers."""
PALM_CENTRE = np.array([0.0, 0.0, 0.08])
"""World position of the centre of the palm face (the hand is placed so that it lands here)."""
TARGET_CENTRE = np.array([0.02, 0.015])
"""(x, y) of the target circle's centre: 2 cm from the palm centre towards the knuckles (+x), 1.5 cm towards
the little finger (+y), where the cupped fingers, the thumb and the little-finger metacarpal surround it."""

HOME = {"WRJ1": 0.0, "WRJ0": 0.04, "FFJ2": 1.3, "MFJ2": 1.3, "RFJ2": 1.3, "LFJ2": 1.3,
        "FFJ1": 1.0, "MFJ1": 1.0, "RFJ1": 1.0, "LFJ1": 1.0, "THJ4": 0.6, "THJ3": 0.6, "THJ0": -0.4}
"""Joint targets (rad) of the resting posture; actuators not named sit at the middle of their range."""

CAMERA = dict(distance=0.3, azimuth=-67.5, elevation=-42.5)
"""The paper's camera; it looks at the centre of the target circle, at ball height."""

# Centre of the palm face in the coordinates of gymnasium-robotics' hand scene (box C_palm0's front face).
_ASSET_PALM_FACE = np.array([0.989, 0.922, 0.1511])
# Yaw of the hand about world z: the fingers point along +x. Of the four quarter turns, this one lets the
# paper's camera (azimuth -67.5) see both balls past the fingers, with the forearm at the image's edge.
_YAW = np.pi / 2


def hand_assets_dir() -> Path:
    """gymnasium-robotics' asset folder (holds `hand/` and `stls/hand/`)."""
    import gymnasium_robotics

    path = Path(gymnasium_robotics.__file__).parent / "envs" / "assets"
    if not (path / "hand" / "robot.xml").exists():
        raise FileNotFoundError(f"gymnasium-robotics' Shadow hand assets are missing under {path}")
    return path


def _frame_quat() -> np.ndarray:
    """Orientation of the hand: yaw about world z after tilting about world x."""
    cy, sy = np.cos(_YAW / 2), np.sin(_YAW / 2)
    ct, st = np.cos(TILT / 2), np.sin(TILT / 2)
    qz = np.array([cy, 0, 0, sy])
    qx = np.array([ct, st, 0, 0])
    w1, x1, y1, z1 = qz
    w2, x2, y2, z2 = qx
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def baoding_xml(timestep: float = TIMESTEP) -> str:
    """The scene's MJCF, including gymnasium-robotics' hand files by absolute path."""
    a = hand_assets_dir()
    q = " ".join(f"{v:.9f}" for v in _frame_quat())
    c = " ".join(f"{v:.6f}" for v in PALM_CENTRE)
    inv = " ".join(f"{-v:.6f}" for v in _ASSET_PALM_FACE)
    z0 = PALM_CENTRE[2] + BALL_RADIUS + 0.01
    balls = "".join(
        f'<body name="ball{i}" pos="{0.03 * i} 0 {z0}"><freejoint name="ball{i}"/>'
        f'<geom name="ball{i}" type="sphere" size="{BALL_RADIUS}" mass="{BALL_MASS}" condim="4" '
        f'friction="{BALL_FRICTION} 0.005 0.0001" rgba="{rgba}" material="ball{i}"/></body>'
        for i, rgba in ((1, "0.85 0.15 0.1 1"), (2, "0.1 0.25 0.85 1")))
    # target markers: mocap sites in group 3, which the agent's camera does not draw (debug views may)
    markers = "".join(
        f'<body name="target{i}" mocap="true" pos="0 0 {z0}"><site name="target{i}" type="sphere" '
        f'size="0.006" group="3" rgba="{rgba}"/></body>'
        for i, rgba in ((1, "1 0.5 0.4 0.8"), (2, "0.4 0.6 1 0.8")))
    return f"""<mujoco model="cmil_baoding">
  <compiler angle="radian" coordinate="local" meshdir="{a}/stls/hand"/>
  <option timestep="{timestep}" iterations="20"><flag warmstart="enable"/></option>
  <include file="{a}/hand/shared.xml"/>
  <asset>
    <include file="{a}/hand/shared_asset.xml"/>
    <material name="ball1" specular="0.5" shininess="0.5"/>
    <material name="ball2" specular="0.5" shininess="0.5"/>
  </asset>
  <worldbody>
    <light name="key" directional="true" pos="0 0 1" dir="0 0.2 -1" diffuse="0.8 0.8 0.8"
           ambient="0.25 0.25 0.25"/>
    <body name="hand_frame" pos="{c}" quat="{q}">
      <body name="hand_asset_origin" pos="{inv}">
        <include file="{a}/hand/robot.xml"/>
      </body>
    </body>
    {balls}
    {markers}
  </worldbody>
</mujoco>"""


def build_model(timestep: float = TIMESTEP):
    import mujoco

    return mujoco.MjModel.from_xml_string(baoding_xml(timestep))


def target_positions(step: int | np.ndarray, phase: float) -> np.ndarray:
    """(..., 2, 2) xy targets of ball 1 and ball 2 after `step` env steps, counter-clockwise."""
    angle = phase + 2 * np.pi * np.asarray(step, float) / STEPS_PER_REVOLUTION
    one = np.stack([np.cos(angle), np.sin(angle)], -1) * TARGET_RADIUS
    return TARGET_CENTRE + np.stack([one, -one], -2)


def oracle_reward(d1: float, d2: float, dropped: bool, wrist_too_high: bool) -> float:
    """PDDM's Baoding reward, used for evaluation (and by the planning expert), never for training."""
    return -5.0 * d1 - 5.0 * d2 - 500.0 * float(dropped) - 10.0 * float(wrist_too_high)


def required_rotation(steps: int) -> float:
    """The least counter-clockwise turn (rad) of the ball pair that counts after `steps` steps: the
    targets' turn less half a revolution (4.7 rad of the targets' 7.9 after 75 steps)."""
    return 2 * np.pi * steps / STEPS_PER_REVOLUTION - np.pi


def episode_criterion(mean_distance: float, dropped: bool, rotation: float, steps: int) -> bool:
    """The success criterion on a whole (or partial) episode of `steps` steps: no ball dropped, the balls
    stayed within `SUCCESS_DISTANCE` of their targets on average, and the pair really turned
    counter-clockwise (the distance alone would also accept a pair that went half a turn backwards,
    which lands each ball back on its own target)."""
    return (not dropped) and mean_distance < SUCCESS_DISTANCE and rotation >= required_rotation(steps)


class BaodingEnv(gym.Env):
    """Rotate two balls in the palm of a Shadow hand, observed as (image_size, image_size, 3) uint8 frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, image_size: int = 64, max_episode_steps: int = EPISODE_LENGTH,
                 success_min_steps: int | None = None, random_phase: bool = True, seed: int | None = None):
        import mujoco

        self.image_size = image_size
        self.max_episode_steps = max_episode_steps
        self.success_min_steps = max_episode_steps if success_min_steps is None else success_min_steps
        self.random_phase = random_phase
        self.model = build_model()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.actuator_names = [m.actuator(i).name for i in range(m.nu)]
        self.ctrl_low = m.actuator_ctrlrange[:, 0].copy()
        self.ctrl_high = m.actuator_ctrlrange[:, 1].copy()
        self._ball_qpos = [int(m.jnt_qposadr[m.joint(f"ball{i}").id]) for i in (1, 2)]
        self._ball_qvel = [int(m.jnt_dofadr[m.joint(f"ball{i}").id]) for i in (1, 2)]
        self._wrj0 = int(m.jnt_qposadr[m.joint("robot0:WRJ0").id])
        # the hand's joints actuated directly, and the distal joints coupled to them by tendons
        self._act_qpos = np.array([m.jnt_qposadr[j] for j in m.actuator_trnid[:, 0]])
        self._coupled = [(int(m.jnt_qposadr[m.joint(f"robot0:{f}J0").id]),
                          int(m.jnt_qposadr[m.joint(f"robot0:{f}J1").id])) for f in ("FF", "MF", "RF", "LF")]
        self.home_action = self.ctrl_to_action(self.home_ctrl())
        self.action_space = spaces.Box(-1.0, 1.0, (m.nu,), np.float32)
        self.observation_space = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        # the paper's camera, looking at the centre of the balls' circle on the palm
        lookat = (float(TARGET_CENTRE[0]), float(TARGET_CENTRE[1]), float(PALM_CENTRE[2] + BALL_RADIUS))
        self.camera = OffscreenCamera(m, image_size, lookat=lookat, **CAMERA)
        self._pending_seed = seed
        self.phase = 0.0
        self.t = 0
        self._dist_sum = 0.0
        self._dropped = False
        self._rotation = self._last_angle = self._angle0 = 0.0

    # ---- action <-> ctrl -------------------------------------------------------------------------
    def action_to_ctrl(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return self.ctrl_low + (a + 1.0) * 0.5 * (self.ctrl_high - self.ctrl_low)

    def ctrl_to_action(self, ctrl: np.ndarray) -> np.ndarray:
        return (2.0 * (ctrl - self.ctrl_low) / (self.ctrl_high - self.ctrl_low) - 1.0).astype(np.float32)

    def home_ctrl(self) -> np.ndarray:
        """The resting posture: wrist held level against its sag, fingers curled into a wall at the knuckles,
        thumb raised along the palm's edge."""
        ctrl = 0.5 * (self.ctrl_low + self.ctrl_high)
        for k, v in HOME.items():
            ctrl[self.actuator_names.index(f"robot0:A_{k}")] = v
        return ctrl

    # ---- state readouts ------------------------------------------------------------------------------
    def ball_positions(self) -> np.ndarray:
        """(2, 3) world positions of the balls."""
        return np.stack([self.data.qpos[a:a + 3] for a in self._ball_qpos])

    def targets(self, step: int | None = None) -> np.ndarray:
        return target_positions(self.t if step is None else step, self.phase)

    def wrist_too_high(self) -> bool:
        return bool(self.data.qpos[self._wrj0] < WRIST_HIGH)

    def target_angle(self, step: int | np.ndarray | None = None) -> np.ndarray:
        """Unwrapped direction (rad) of the vector from target 2 to target 1 after `step` steps."""
        step = self.t if step is None else step
        return self.phase + 2 * np.pi * np.asarray(step, float) / STEPS_PER_REVOLUTION

    def pair_angle(self) -> float:
        """Unwrapped direction (rad) of the vector from ball 2 to ball 1; starts within pi of the phase."""
        return self._angle0 + self._rotation

    def _pair_angle(self) -> float:
        v = self.ball_positions()
        return float(np.arctan2(v[0, 1] - v[1, 1], v[0, 0] - v[1, 0]))

    def _distances(self) -> np.ndarray:
        return np.linalg.norm(self.ball_positions()[:, :2] - self.targets(), axis=-1)

    def _show_targets(self) -> None:
        tg = self.targets()
        self.data.mocap_pos[:, :2] = tg
        self.data.mocap_pos[:, 2] = PALM_CENTRE[2] + BALL_RADIUS

    def _state_vector(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel, self.targets().ravel(), [self.t, self.phase]])

    def _info(self) -> dict:
        d = self._distances()
        mean_so_far = self._dist_sum / max(self.t, 1)
        ok = episode_criterion(mean_so_far, self._dropped, self._rotation, self.t)
        return {"success": bool(ok and self.t >= self.success_min_steps),
                "criterion_so_far": bool(ok), "state": self._state_vector(),
                "target_distance": float(d.mean()), "mean_target_distance": float(mean_so_far),
                "dropped": self._dropped, "wrist_too_high": self.wrist_too_high(), "step": self.t,
                "rotation": self._rotation}

    # ---- gym API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        ctrl = self.home_ctrl()
        d.ctrl[:] = ctrl
        d.qpos[self._act_qpos] = ctrl
        for distal, middle in self._coupled:  # the tendon keeps J0 ~ 1.14 J1; start on it
            d.qpos[distal] = min(d.qpos[middle] * 0.00805 / 0.00705, 1.571)
        self.phase = float(rng.uniform(0, 2 * np.pi)) if self.random_phase else 0.0
        self.t = 0
        start = target_positions(0, self.phase) + rng.normal(0, 0.002, (2, 2))
        for k, adr in enumerate(self._ball_qpos):
            d.qpos[adr:adr + 3] = [*start[k], PALM_CENTRE[2] + BALL_RADIUS + 0.003]
            d.qpos[adr + 3:adr + 7] = [1, 0, 0, 0]
        self._show_targets()
        mujoco.mj_forward(m, d)
        self._dist_sum = 0.0
        self._dropped = False
        self._rotation, self._last_angle = 0.0, self._pair_angle()
        self._angle0 = self.phase + float(np.angle(np.exp(1j * (self._last_angle - self.phase))))
        return self.camera.render(d), self._info()

    def step(self, action):
        import mujoco

        if self.t >= self.max_episode_steps or self._dropped:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.data.ctrl[:] = self.action_to_ctrl(action)
        mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)
        self.t += 1
        self._show_targets()
        d = self._distances()
        self._dist_sum += float(d.mean())
        self._dropped = bool(np.any(self.ball_positions()[:, 2] < DROP_Z))
        angle = self._pair_angle()  # counter-clockwise turn of the ball pair, unwrapped
        self._rotation += float(np.angle(np.exp(1j * (angle - self._last_angle))))
        self._last_angle = angle
        wrist = self.wrist_too_high()
        reward = oracle_reward(float(d[0]), float(d[1]), self._dropped, wrist)
        terminated = self._dropped
        truncated = (not terminated) and self.t >= self.max_episode_steps
        return self.camera.render(self.data), reward, terminated, truncated, self._info()

    def render(self):
        return self.camera.render(self.data)

    def close(self) -> None:
        self.camera.close()


def make_baoding_env(seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
    """The Baoding task (see module docstring); `seed` seeds the first `reset`."""
    return GuardedRender(BaodingEnv(image_size=image_size, seed=seed, **kwargs))
