#!/usr/bin/env bash
# A task cmil does not ship, end to end from the command line (docs/own_task.md has the numbers):
# gymnasium-robotics' FetchReach by its gymnasium id, demos from the user's own policy (expert.py),
# then BC and CMIL on 64x64 frames. Run from the repository root; SEED and CMIL_ENV_STEPS may be set.
set -euo pipefail
export MUJOCO_GL="${MUJOCO_GL:-egl}"
seed="${SEED:-0}"
task="gym:gymnasium_robotics:FetchReach-v4"
# 128x128 renders (box-filtered to 64x64) from a camera close to the gripper and the red target.
env_kwargs='{"width": 128, "height": 128, "default_camera_config": {"distance": 1.2, "azimuth": 150.0, "elevation": -25.0, "lookat": [1.25, 0.75, 0.5]}}'
demos=demos/fetch-reach
[ -d "$demos" ] || cmil demos collect --task "$task" --env-kwargs "$env_kwargs" \
    --expert examples/fetch_reach/expert.py:reach_expert --episodes 10 --out "$demos"
cmil demos show "$demos"
cmil train --method bc --task "$task" --env-kwargs "$env_kwargs" --demos "$demos" --seed "$seed" \
    --threads 1 --run-dir "runs/fetch-reach__bc__seed$seed"
cmil train --method cmil --task "$task" --env-kwargs "$env_kwargs" --demos "$demos" --seed "$seed" \
    --threads 1 --env-steps "${CMIL_ENV_STEPS:-2000}" --run-dir "runs/fetch-reach__cmil__seed$seed"
