"""Contact sheets: a grid of frames from several episodes in one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmil.data.episodes import Episode


def contact_sheet(episodes: list[Episode], out: Path, columns: int = 8, max_rows: int = 10) -> np.ndarray:
    """One row per episode (at most `max_rows`), `columns` frames evenly spaced in time; saved to `out`."""
    import imageio

    rows = []
    for ep in episodes[:max_rows]:
        idx = np.linspace(0, len(ep["image"]) - 1, columns).round().astype(int)
        frames = [np.pad(ep["image"][i], ((1, 1), (1, 1), (0, 0)), constant_values=255) for i in idx]
        rows.append(np.concatenate(frames, axis=1))
    sheet = np.concatenate(rows, axis=0)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(out, sheet)
    return sheet
