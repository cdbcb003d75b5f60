"""Scripted Franka Kitchen expert: waypoints + differential inverse kinematics on the MuJoCo Jacobian.

It reads simulator state (site poses, joint angles) from the env it acts in and solves the paper's four
subtasks in the paper's demo order: open the microwave, move the kettle to the top-left burner, turn on
the light, slide the cabinet open.

Each subtask is a short list of phases. A phase gives an end-effector (the `end_effector` site between
the fingertips) position target, an orientation target and a gripper command, and ends when the target
is reached (or a condition on the object holds, or it times out). Every step, a proportional law turns
the pose error into an end-effector twist; damped least squares on the site Jacobian (`mj_jacSite`)
maps it to the 7 arm joint velocities, with a null-space pull towards the initial posture. The env's
action is a joint velocity of 2 rad/s per unit (gymnasium-robotics' `act_rng`), so a = qdot / 2,
corrected for the damped servos' lag and their sag under gravity (see `act`). A subtask that is not
completed after its phases is retried (bounded). Design notes and measurements: docs/kitchen.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cmil.envs.kitchen import tasks_satisfied

ACTION_SCALE = 2.0  # rad/s (m/s for fingers) per unit action in gymnasium-robotics' Franka env
OPEN, CLOSE = 1.0, -1.0


def grasp_rot(approach: np.ndarray, bar: np.ndarray) -> np.ndarray:
    """Orientation (columns: site x, y, z in world) approaching along `approach` with the fingers
    closing across a bar along `bar`: z = approach, y (finger axis) perpendicular to both."""
    z = approach / np.linalg.norm(approach)
    y = np.cross(z, bar)
    y /= np.linalg.norm(y)
    return np.column_stack([np.cross(y, z), y, z])


def pitched(yaw: float, pitch: float) -> np.ndarray:
    """Unit vector with heading `yaw` (from world x, about z) tilted down by `pitch` (rad)."""
    return np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])


UP = np.array([0.0, 0.0, 1.0])
MW_YAW, MW_PITCH = 0.23, 0.35  # microwave grasp: turn towards the robot, tilt down (rad)
MW_GRASP_DZ = 0.07  # grasp the handle this far above its centre (less reach needed)
KETTLE_PITCH = 0.8  # rad below horizontal
KETTLE_ROT = grasp_rot(pitched(np.pi / 2, KETTLE_PITCH), np.array([1.0, 0.0, 0.0]))
KETTLE_GOAL_HANDLE = np.array([-0.22, 0.75, 1.62 + 0.259])  # D4RL kettle goal + handle height (x: clear the microwave)
# Pushing pose for the light switch and the slide cabinet: pointing into the kitchen (+y), fingers along x.
FORWARD = grasp_rot(np.array([0.0, 1.0, 0.0]), UP)


@dataclass
class Phase:
    """One waypoint: pose and gripper targets, and when to move on."""

    name: str
    target: Callable[[], np.ndarray]  # end-effector position
    rot: Callable[[], np.ndarray]  # end-effector orientation (columns: site axes in world)
    grip: float  # OPEN or CLOSE
    until: Callable[[], bool] | None = None  # default: position reached within `tol` (or stalled)
    tol: float = 0.02
    min_steps: int = 0
    max_steps: int = 60
    speed: float = 0.5  # m/s cap on the end-effector speed


class KitchenExpert:
    """Waypoint + differential-IK expert for `cmil.envs.kitchen` (see module docstring)."""

    def __init__(self, env, noise_std: float = 0.0, seed: int | None = None, retries: int = 2,
                 pos_gain: float = 8.0, rot_gain: float = 4.0, damping: float = 0.05, posture_gain: float = 0.5):
        """
        noise_std: std of Gaussian noise added to every action (demo diversity); 0 = deterministic.
        retries: how many times a subtask whose object missed its goal is attempted again.
        pos_gain, rot_gain: proportional gains (1/s) from pose error to end-effector twist.
        damping: damped-least-squares regulariser of the Jacobian inverse.
        posture_gain: null-space pull (1/s) towards the initial arm posture.
        """
        import mujoco

        self.mj = mujoco
        self.sim = env.unwrapped
        self.model, self.data = self.sim.model, self.sim.data
        self.noise_std, self.retries = noise_std, retries
        self.pos_gain, self.rot_gain, self.damping, self.posture_gain = pos_gain, rot_gain, damping, posture_gain
        self.rng = np.random.default_rng(seed)
        m = self.model
        site = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, n)  # noqa: E731
        body = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)  # noqa: E731
        self.ee = site("end_effector")
        self.s_micro, self.s_kettle = site("microhandle_site"), site("kettle_site")
        self.s_light, self.s_slide = site("light_site"), site("slide_site")
        self.b_door, self.b_kettle = body("microdoorroot"), body("kettleroot")
        self.j_micro = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "microwave")
        self.q_home = self.sim.kitchen.robot_env.init_qpos[:7].copy()
        self.jnt_range = m.jnt_range[:7].copy()
        self.kp = m.actuator_gainprm[:7, 0].copy()  # position-servo gains of the arm actuators
        # Heavily damped P servos reach only part of each step's position target: a first-order lag
        # with time constant damping / kp covers 1 - exp(-dt kp / damping) of it (~50% for joints 1-4).
        self.track = 1.0 - np.exp(-self.sim.kitchen.robot_env.dt * self.kp / m.dof_damping[:7])
        self.dt = self.sim.kitchen.robot_env.dt
        self.subtasks = self._plan()
        self.reset()

    # ----- state readers -----
    def _site(self, i: int) -> np.ndarray:
        return self.data.site_xpos[i].copy()

    def _q(self, task: str) -> np.ndarray:
        return self.data.qpos[self.sim.kitchen_index(task)]

    def _done(self, task: str) -> bool:
        """Completed in this episode (the env's sticky record) or satisfied now."""
        return task in getattr(self.sim, "completed", ()) or tasks_satisfied(self.data.qpos)[task]

    def _door_rot(self) -> np.ndarray:
        """Grasp of the vertical microwave handle: facing the door, turned towards the robot and tilted
        down (the handle is at the edge of the arm's reach; a level, door-normal grasp is not reachable)."""
        door_y = self.data.xmat[self.b_door].reshape(3, 3)[:, 1]  # the door's local y points into it
        yaw = np.arctan2(door_y[1], door_y[0]) + MW_YAW
        return grasp_rot(pitched(yaw, MW_PITCH), UP)

    def _kettle_rot(self) -> np.ndarray:
        """Grasp across the kettle handle (along world x) from the robot's side, tilted down: a top-down
        hand would put the wrist into the hood and knobs when the kettle is set down under the hood."""
        return KETTLE_ROT

    def _door_arc_target(self, lead: float = 0.25) -> np.ndarray:
        """A point ahead of the handle on its circle about the door hinge (opening = negative angle)."""
        anchor = self.data.xanchor[self.j_micro]
        h = self._site(self.s_micro)
        r = h[:2] - anchor[:2]
        phi = np.arctan2(r[1], r[0]) - lead
        radius = np.linalg.norm(r)
        return np.array([anchor[0] + radius * np.cos(phi), anchor[1] + radius * np.sin(phi), h[2] + MW_GRASP_DZ])

    # ----- plan -----
    def _plan(self) -> list[tuple[str, list[Phase]]]:
        s = self
        fwd = lambda: FORWARD  # noqa: E731
        ee = lambda: s._site(s.ee)  # noqa: E731
        handle = lambda: s._site(s.s_micro)  # noqa: E731
        kettle = lambda: s._site(s.s_kettle)  # noqa: E731
        light = lambda: s._site(s.s_light)  # noqa: E731
        slide = lambda: s._site(s.s_slide)  # noqa: E731
        self._mark: dict[str, np.ndarray] = {}

        def mark(key: str, value: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
            """A target frozen at its value when the phase starts (e.g. 'back off from where I am')."""
            def get() -> np.ndarray:
                if key not in self._mark:
                    self._mark[key] = value()
                return self._mark[key]
            return get

        grasp_point = lambda: handle() + [0, 0, MW_GRASP_DZ]  # noqa: E731
        approach = lambda: s._door_rot()[:, 2]  # noqa: E731
        microwave = [
            Phase("mw-pregrasp", lambda: grasp_point() - 0.10 * approach(), s._door_rot, OPEN, tol=0.03),
            Phase("mw-reach", grasp_point, s._door_rot, OPEN, tol=0.012, speed=0.3),
            Phase("mw-grasp", grasp_point, s._door_rot, CLOSE, until=lambda: False, min_steps=3, max_steps=3),
            Phase("mw-pull", s._door_arc_target, s._door_rot, CLOSE,
                  until=lambda: s._q("microwave")[0] < -0.6, max_steps=40, speed=0.4),
            Phase("mw-release", ee, s._door_rot, OPEN, until=lambda: False, max_steps=2),
            Phase("mw-back", mark("mw-back", lambda: ee() - 0.06 * approach() + [0, 0, 0.03]), s._door_rot, OPEN,
                  tol=0.025),
        ]
        k_approach = KETTLE_ROT[:, 2]
        kettle_phases = [
            Phase("k-pregrasp", lambda: kettle() - 0.12 * k_approach, s._kettle_rot, OPEN, tol=0.03),
            Phase("k-reach", kettle, s._kettle_rot, OPEN, tol=0.01, speed=0.25),
            Phase("k-grasp", kettle, s._kettle_rot, CLOSE, until=lambda: False, min_steps=4, max_steps=4),
            Phase("k-lift", mark("k-lift", lambda: ee() + [0, 0, 0.07]), s._kettle_rot, CLOSE, tol=0.02, speed=0.3),
            Phase("k-carry", lambda: KETTLE_GOAL_HANDLE + [0, 0, 0.07], s._kettle_rot, CLOSE, tol=0.025, speed=0.45),
            Phase("k-lower", lambda: KETTLE_GOAL_HANDLE + [0, 0, 0.01], s._kettle_rot, CLOSE, tol=0.015, speed=0.2),
            Phase("k-release", ee, s._kettle_rot, OPEN, until=lambda: False, max_steps=3),
            Phase("k-back", mark("k-back", lambda: ee() - 0.10 * k_approach), s._kettle_rot, OPEN, tol=0.03),
        ]
        light_phases = [
            # The lever is a horizontal capsule (radius 2 cm): push it sideways with the finger pads
            # slightly below its axis, where contact forces push the hand down onto it, not over it.
            Phase("l-side", lambda: light() + [0.07, -0.08, -0.01], fwd, CLOSE, tol=0.025),
            Phase("l-in", lambda: light() + [0.06, 0.0, -0.01], fwd, CLOSE, tol=0.015),
            Phase("l-push", mark("l-push", lambda: light() + [-0.09, 0.0, -0.01]), fwd, CLOSE,
                  until=lambda: s._q("light switch")[0] < -0.6, max_steps=30, speed=0.2),
            Phase("l-back", mark("l-back", lambda: ee() + [0, -0.10, 0]), fwd, CLOSE, tol=0.03),
        ]
        slide_phases = [
            Phase("s-side", lambda: slide() + [-0.08, -0.08, 0.0], fwd, CLOSE, tol=0.025),
            Phase("s-in", lambda: slide() + [-0.07, 0.0, 0.0], fwd, CLOSE, tol=0.015),
            Phase("s-push", mark("s-push", lambda: slide() + [0.30, 0.0, 0.0]), fwd, CLOSE,
                  until=lambda: s._q("slide cabinet")[0] > 0.25, max_steps=40, speed=0.3),
            Phase("s-back", mark("s-back", lambda: ee() + [0, -0.10, 0]), fwd, CLOSE, tol=0.03),
        ]
        return [("microwave", microwave), ("kettle", kettle_phases), ("light switch", light_phases),
                ("slide cabinet", slide_phases)]

    # ----- control -----
    def reset(self) -> None:
        self.task_i, self.phase_i, self.phase_t, self.tries = 0, 0, 0, 0
        self._mark = {}
        self._ee_hist: list[np.ndarray] = []

    @property
    def phase(self) -> Phase | None:
        if self.task_i >= len(self.subtasks):
            return None
        return self.subtasks[self.task_i][1][self.phase_i]

    def _advance(self) -> None:
        """Next phase; after a subtask's last phase, retry it if its object missed the goal."""
        self.phase_i += 1
        self.phase_t = 0
        self._mark = {}
        task, phases = self.subtasks[self.task_i]
        if self.phase_i < len(phases):
            return
        if not self._done(task) and self.tries < self.retries:
            self.tries += 1
            self.phase_i = 0
            return
        self.task_i, self.phase_i, self.tries = self.task_i + 1, 0, 0

    def _phase_finished(self, p: Phase) -> bool:
        if self.phase_t >= p.max_steps:
            return True
        if self.phase_t < p.min_steps:
            return False
        if p.until is not None:
            return p.until()
        # A free move that has stopped short (blocked, or the target is out of reach) ends too.
        hist = self._ee_hist
        if self.phase_t >= 8 and len(hist) >= 5 and np.linalg.norm(hist[-1] - hist[-5]) < 0.003:
            return True
        return bool(np.linalg.norm(p.target() - self._site(self.ee)) < p.tol)

    def act(self) -> np.ndarray:
        """Joint-velocity action in [-1, 1] for the current simulator state."""
        self._ee_hist = (self._ee_hist + [self._site(self.ee)])[-5:]
        while self.phase is not None and self._phase_finished(self.phase):
            self._advance()
        p = self.phase
        ff = self._gravity_feedforward()
        if p is None:  # all done: hold still
            action = np.concatenate([ff, [CLOSE, CLOSE]])
        else:
            self.phase_t += 1
            arm = self._ik(p.target(), p.rot(), p.speed) / (ACTION_SCALE * self.track)
            # Scale the whole joint velocity down (keeping its direction) so that arm + ff fits in [-1, 1].
            peak = np.max(np.abs(arm) / np.maximum(1.0 - np.abs(ff), 0.1))
            arm = arm / peak if peak > 1.0 else arm
            action = np.concatenate([arm + ff, [p.grip, p.grip]])
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _ik(self, target: np.ndarray, rot: np.ndarray, speed: float) -> np.ndarray:
        """Arm joint velocities (rad/s) moving the end-effector site towards (target, rot)."""
        mj, m, d = self.mj, self.model, self.data
        pos = d.site_xpos[self.ee]
        cur = d.site_xmat[self.ee].reshape(3, 3)
        v = self.pos_gain * (target - pos)
        if np.linalg.norm(v) > speed:
            v *= speed / np.linalg.norm(v)
        # The gripper is symmetric: a target turned half a turn about its approach axis is the same
        # grasp, so aim for whichever of the two is nearer (avoids needless wrist spins).
        flipped = rot * np.array([-1.0, -1.0, 1.0])
        if np.trace(cur.T @ flipped) > np.trace(cur.T @ rot):
            rot = flipped
        # Rotation error: axis-angle-like vector that turns the current axes onto the target axes.
        w = self.rot_gain * 0.5 * sum(np.cross(cur[:, i], rot[:, i]) for i in range(3))
        if np.linalg.norm(w) > 2.0:
            w *= 2.0 / np.linalg.norm(w)
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mj.mj_jacSite(m, d, jacp, jacr, self.ee)
        J_full = np.vstack([jacp[:, :7], jacr[:, :7]])
        q = d.qpos[:7]
        lo, hi = self.jnt_range[:, 0] + 0.02, self.jnt_range[:, 1] - 0.02
        free = np.ones(7, bool)
        # Joints at a limit and pushed further into it are frozen and the twist re-solved with the others.
        for _ in range(3):
            J = J_full * free
            J_pinv = J.T @ np.linalg.inv(J @ J.T + self.damping**2 * np.eye(6))
            qdot = J_pinv @ np.concatenate([v, w])
            qdot += (np.eye(7) - J_pinv @ J) @ (self.posture_gain * (self.q_home - q) * free)
            blocked = free & (((q <= lo) & (qdot < 0)) | ((q >= hi) & (qdot > 0)))
            if not blocked.any():
                break
            free &= ~blocked
        return qdot * free

    def _gravity_feedforward(self) -> np.ndarray:
        """Action that holds the arm still against gravity.

        The env turns a velocity action into a position target `q + 2 a dt` for P-only servos, which
        sag under load by bias_force / kp; without this term the arm settles centimetres short.
        """
        sag = self.data.qfrc_bias[:7] / self.kp
        return sag / (ACTION_SCALE * self.dt)


def make_kitchen_expert(env, noise_std: float = 0.0, seed: int | None = None) -> KitchenExpert:
    """The kitchen expert acting in `env` (built by `cmil.envs.kitchen.make_kitchen_env`)."""
    return KitchenExpert(env, noise_std=noise_std, seed=seed)
