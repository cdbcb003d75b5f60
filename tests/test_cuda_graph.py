"""`cuda_graph`: the update reads nothing back to the host, the graph-safe path computes what the eager one
does, and the config refuses what cannot be graphed. The replay itself needs a GPU (last test, skipped here)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cmil.config import replace
from cmil.config_io import validate
from cmil.cuda_graph import GraphedStep
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.errors import ConfigError
from cmil.methods.cmil import _BATCH_KEYS, CMIL
from cmil.models.world_model import WorldModel
from cmil.presets import PRESETS, dry_run_config

# The operators that read a device value back to the host or give a data-dependent shape.
HOST_READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]  # 'nonzero.default' -> 'nonzero'
        if name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _method(preset: str, episodes, device: str = "cpu", **changes):
    cfg = replace(dry_run_config(PRESETS[preset]), task="point", device=device, **changes)
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device(device))
    expert, replay = SequenceReplay(cfg.seq_len, seed=0), SequenceReplay(cfg.seq_len, seed=1)
    for ep in episodes:
        expert.add_episode(ep)
        replay.add_episode(ep)
    return method, expert, replay


def _batches(method, expert, replay):
    B = method.cfg.batch_size
    return (batch_to_torch({k: v for k, v in buf.sample(B).items() if k in _BATCH_KEYS}) for buf in (expert, replay))


@pytest.mark.parametrize("preset", ["default", "paper"])
@pytest.mark.parametrize("agent", [True, False])
def test_graph_safe_step_reads_nothing_back(preset, agent, point_episodes, monkeypatch):
    method, expert, replay = _method(preset, point_episodes)
    method.update(expert, replay)  # a first eager update sets the running statistics and the carried state
    method.wm.graph_safe = True
    exp, rep = _batches(method, expert, replay)
    # `.tolist()` and numpy conversions read without dispatching: make them fail loudly.
    for name in ("tolist", "numpy", "__array__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"Tensor.{_n} in the step"))
    with HostReads() as reads:
        metrics = method._train_step(exp, rep, agent)
    assert reads.seen == []
    assert all(isinstance(v, torch.Tensor) for v in metrics.values())


def test_the_eager_path_reads_back_where_the_graph_safe_one_does_not(point_episodes):
    """The check above can fail: the eager world model reads its resets and head groups back."""
    method, expert, replay = _method("paper", point_episodes)
    exp, rep = _batches(method, expert, replay)
    with HostReads() as reads:
        method._train_step(exp, rep, True)
    assert {"nonzero", "_unique2"} <= set(reads.seen)


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_graph_safe_updates_equal_eager_ones(preset, point_episodes):
    """Same seed, same draws (on the CPU the heads come from the same generator): the graph-safe path (always
    reset, gathered heads, tensor metrics) gives the eager path's metrics and weights within float tolerance."""
    runs = []
    for graph_safe in (False, True):
        method, expert, replay = _method(preset, point_episodes)
        method.wm.graph_safe = graph_safe
        metrics = [method.update(expert, replay, agent=i != 1) for i in range(3)]
        runs.append((metrics, {k: v.clone() for k, v in method.actor.state_dict().items()}))
    (eager, eager_actor), (safe, safe_actor) = runs
    for m_eager, m_safe in zip(eager, safe, strict=True):
        assert m_eager.keys() == m_safe.keys()
        for key in m_eager:
            assert m_safe[key] == pytest.approx(m_eager[key], rel=1e-4, abs=1e-5), key
    for key in eager_actor:
        torch.testing.assert_close(safe_actor[key], eager_actor[key], rtol=1e-4, atol=1e-5)


def test_gathered_heads_equal_grouped_heads():
    wm = WorldModel(3, replace(PRESETS["paper"], **{"wm.deter": 12, "wm.hidden": 10, "wm.stoch": 4,
                                                    "wm.ensemble": 5}).wm)
    deter = torch.randn(6, 9, 12, requires_grad=True)
    heads = torch.tensor([0, 3, 3, 1, 4, 0, 0, 2, 3])
    grouped, gathered = wm._drawn_heads(deter, heads), wm._gathered_heads(deter, heads)
    torch.testing.assert_close(gathered, grouped)
    weights = torch.randn_like(grouped)
    params = [deter, wm.prior_hidden.weight, wm.prior_hidden.bias, wm.prior_out.weight, wm.prior_out.bias]
    for g_grouped, g_gathered in zip(torch.autograd.grad((grouped * weights).sum(), params),
                                     torch.autograd.grad((gathered * weights).sum(), params), strict=True):
        torch.testing.assert_close(g_gathered, g_grouped)


@pytest.mark.parametrize(("changes", "message"), [
    ({"device": "cpu"}, "needs a CUDA device"),
    ({"device": "cuda", "method": "bc"}, "has no graphed update"),
    ({"device": "cuda", "agent.critic_target": "random"}, "critic_target"),
])
def test_config_refuses_what_cannot_be_graphed(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(replace(PRESETS["paper"], cuda_graph=True, **changes))
    validate(replace(PRESETS["paper"], cuda_graph=True, device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_graphed_step_without_cuda_says_so():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        GraphedStep(lambda: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["default", "paper"])
def test_graph_replay_follows_the_eager_updates(preset, point_episodes):
    """On a GPU: updates replayed from the captured graph continue where eager ones would (same draws from
    the device generator, same batches), within float tolerance, for more updates than the warm-up."""
    runs = []
    for graphed in (False, True):
        method, expert, replay = _method(preset, point_episodes, device="cuda", cuda_graph=True)
        if not graphed:
            method.cfg = replace(method.cfg, cuda_graph=False)  # the same graph-safe model, stepped eagerly
        runs.append([method.update(expert, replay) for _ in range(7)])
    for m_eager, m_graph in zip(*runs, strict=True):
        for key in m_eager:
            assert m_graph[key] == pytest.approx(m_eager[key], rel=1e-3, abs=1e-4), key
