"""Self-imitation for CMIL (`agent.self_imitation`; a departure from the paper, off in every preset).

The online phase stores ~100 of the policy's own episodes. Every `self_imitation_every` new episodes, each stored
episode is scored (CMIL passes D's mean logit on its last pairs) and the top `self_imitation` fraction is kept; each
update then draws `self_imitation_windows` of its replay windows from those episodes and flags them, and CMIL's BC term
treats the flagged windows as demonstrations. `self_imitation_rank='success'` ranks by the task's success flag instead:
a measurement of what the best possible choice could give, not imitation learning (docs/results.md, round 22).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cmil.config_sections import AgentConfig
from cmil.data.episodes import Episode, episode_success
from cmil.data.replay import SequenceReplay


class EpisodeSelection:
    """Which online episodes count as demonstrations, and replay batches that lead with their windows. `state` is
    plain data (the selected episode ids in `SequenceReplay.total_added` order, when they were ranked, and what the
    log shows), checkpointed by the method so that a resumed run selects as an uninterrupted one."""

    def __init__(self, cfg: AgentConfig, score: Callable[[Episode], float]):
        self.cfg, self.score = cfg, score
        self.state: dict = {}

    def replay_batch(self, replay: SequenceReplay, n: int, online: bool, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """`n` replay windows (the `keys` of them that the replay holds). Online, once episodes are selected, the first
        self_imitation_windows (0 = half, at least one) come from them; 'self_demo' flags those (1) for the BC term.
        Before that, and in pretraining, every flag is 0."""
        a = self.cfg
        among = np.zeros(0, np.int64)
        if online:
            if replay.total_added >= self.state.get("ranked_at", 0) + a.self_imitation_every:
                self.rank(replay)
            among = np.array(self.state.get("ids", []), np.int64) - replay.first_index()
            among = among[among >= 0]                              # evicted episodes drop out
        k = (a.self_imitation_windows or max(1, n // 2)) if len(among) else 0
        parts = [replay.sample(k, among)] if k else []
        parts.append(replay.sample(n - k))
        batch = {key: np.concatenate([p[key] for p in parts]) for key in keys if key in parts[-1]}
        batch["self_demo"] = (np.arange(n) < k).astype(np.float32)
        return batch

    def rank(self, replay: SequenceReplay) -> None:
        """Score every stored episode and keep the top self_imitation fraction. The success flags are read for the
        log (`selected_success`, `all_success`) and, only with self_imitation_rank 'success', for the choice."""
        a = self.cfg
        scores = np.array([self.score(ep) for ep in replay.episodes])
        succeeded = np.array([episode_success(ep) for ep in replay.episodes])
        if a.self_imitation_rank == "success":  # the upper-bound measurement; the score only breaks ties
            scores = succeeded * 1e6 + scores
        count = int(np.ceil(a.self_imitation * len(scores)))
        top = np.argsort(-scores, kind="stable")[:count]
        self.state.update(ranked_at=replay.total_added, ids=sorted(int(i) + replay.first_index() for i in top),
                          selected=count, selected_success=float(succeeded[top].mean()) if count else 0.0,
                          all_success=float(succeeded.mean()))

    def metrics(self) -> dict[str, float]:
        """The last ranking: how many episodes were selected and how often they (and all stored ones) succeeded."""
        return {f"self_imitation/{k}": self.state[k] for k in ("selected", "selected_success", "all_success")
                if k in self.state}
