"""Running statistics used to rescale CMIL's signals."""

import torch

from cmil.models.normalize import ReturnScale, RunningMeanStd


def test_running_mean_std_tracks_and_standardises():
    torch.manual_seed(0)
    stats = RunningMeanStd(3, decay=0.9)
    x = torch.randn(5000, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0])
    stats.update(x)  # the first batch sets the statistics
    z = stats.normalize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=1e-2, rtol=0)
    stats.update(x + 10)  # later batches move it by 1 - decay
    torch.testing.assert_close(stats.mean, x.mean(0) + 1.0, atol=1e-3, rtol=0)


def test_return_scale_is_the_5_to_95_percent_range_floored_at_one():
    scale = ReturnScale(decay=0.0)
    scale.update(torch.linspace(0, 100, 10001))
    assert abs(float(scale.scale) - 90.0) < 0.1
    scale.update(torch.linspace(0, 0.5, 101))
    assert float(scale.scale) == 1.0
    assert set(scale.state_dict()) == {"range", "count"}  # the quantile levels are not checkpointed


def test_running_mean_std_stops_moving_after_freeze_after_updates():
    stats = RunningMeanStd(decay=0.5, freeze_after=2)
    stats.update(torch.tensor([1.0, 3.0]))   # sets: mean 2
    stats.update(torch.tensor([6.0, 6.0]))   # half-way: mean 4
    frozen = (stats.mean.clone(), stats.var.clone())
    assert float(frozen[0]) == 4.0
    for shift in (10.0, 100.0):              # later batches leave the statistics as they were
        stats.update(torch.tensor([shift, shift + 2]))
    torch.testing.assert_close((stats.mean, stats.var), frozen, atol=0, rtol=0)
    assert int(stats.count) == 4
    follows = RunningMeanStd(decay=0.5)      # 0 (the default): the statistics keep following
    for x in ([1.0, 3.0], [6.0, 6.0], [10.0, 12.0]):
        follows.update(torch.tensor(x))
    assert float(follows.mean) == 7.5
