"""A user's own demonstrator for gymnasium-robotics' FetchReach (docs/own_task.md).

cmil calls `reach_expert(obs)` with the env's own observation (FetchReach's dict: `observation` starts
with the gripper's xyz, `desired_goal` is the target's xyz) and takes the env's own action back
(FetchReach: Box(-1, 1, (4,)), xyz displacement and gripper). A proportional controller reaches every
target well inside the 50-step episode.
"""

import numpy as np

GAIN = 10.0  # action per metre of error; FetchReach moves the gripper 5 cm per unit of action


def reach_expert(obs: dict) -> np.ndarray:
    error = np.asarray(obs["desired_goal"]) - np.asarray(obs["observation"][:3])
    return np.clip(np.append(GAIN * error, 0.0), -1.0, 1.0).astype(np.float32)
