#!/usr/bin/env bash
# Idempotent set-up: system libraries for headless MuJoCo rendering, a virtual environment in .venv,
# the pinned CPU torch wheel first (an unpinned torch would pull a multi-GB CUDA build), then cmil.
# A stamp keyed on pyproject.toml makes a second run a no-op.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CMIL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.cmil-setup-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

# Debian packages: EGL/OSMesa for offscreen MuJoCo rendering. Only installs what is missing.
debs="libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglfw3"
missing=""
for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] warning: missing Debian packages ($missing); install them for headless rendering" >&2
  fi
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[dev,sweep]"
rm -f "$venv"/.cmil-setup-*
touch "$stamp"
echo "[setup] done: $venv"
