"""cmil: imitation learning from pixels with conservative world models (Kolev et al., L4DC 2024).

The Python API (`cmil.api`) is available here, imported on first use so that `import cmil` stays light:
`cmil.register_task`, `cmil.collect_demos`, `cmil.train_policy`, `cmil.evaluate_run`, `cmil.load_policy`,
and `cmil.make_env` (any task, or "gym:ID", as the pixel env cmil learns from).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

API = ("register_task", "collect_demos", "train_policy", "evaluate_run", "load_policy", "make_config")
__all__ = [*API, "make_env"]


def __getattr__(name: str) -> Any:
    if name in API:
        from cmil import api

        return getattr(api, name)
    if name == "make_env":
        from cmil.envs import make_env

        return make_env
    raise AttributeError(f"module 'cmil' has no attribute {name!r}")
