#!/usr/bin/env bash
# Set up (once) and run the test suite on the CPU. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "${CMIL_VENV:-$root/.venv}/bin/python" -m pytest "$@"
