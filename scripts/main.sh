#!/usr/bin/env bash
# Set up (once), then the main job: collect expert demos for the default task (once), train CMIL with
# the `default` preset, evaluate, and print its success rate beside the expert's.
# Extra arguments go to `cmil train` (e.g. --seed 1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "${CMIL_VENV:-$root/.venv}/bin/cmil" main "$@"
