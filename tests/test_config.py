"""Config validation, the resume rule and the method registry (no env, no training)."""

import typing

import pytest

from cmil.config import STEERING_FIELDS, Config, replace
from cmil.config_io import flatten, from_dict, resume_conflicts, to_dict, validate
from cmil.errors import ConfigError
from cmil.launch import dry_run_preset
from cmil.methods.base import method_classes
from cmil.presets import PRESETS, apply_method


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_and_its_dry_run_are_valid(name):
    validate(PRESETS[name])
    validate(dry_run_preset(PRESETS[name]))
    assert from_dict(to_dict(PRESETS[name])) == PRESETS[name]


@pytest.mark.parametrize("change,field", [
    ({"batch_size": 0}, "batch_size"), ({"env_steps": -1}, "env_steps"), ({"threads": -1}, "threads"),
    ({"image_size": 8}, "image_size"), ({"device": "gpu"}, "device"), ({"seq_len": 2.5}, "seq_len"),
    ({"eval_deterministic": "yes"}, "eval_deterministic"), ({"method": "ppo"}, "method"),
    ({"wm.lr": 0.0}, "wm.lr"), ({"agent.lam": -0.1}, "agent.lam"), ({"dac.tau": float("inf")}, "dac.tau"),
    ({"bc.batch": 0}, "bc.batch"), ({"agent.reward": "other"}, "agent.reward"),
    ({"agent.critic_action_grad": False, "agent.actor_objective": "q"}, "agent.critic_action_grad"),
    ({"wm.freeze_representation": True, "pretrain_updates": 0, "pretrain_bc_updates": 0}, "wm.freeze_representation"),
    ({"wm.freeze_representation": True, "method": "vmail"}, "wm.freeze_representation"),
    ({"wm.freeze_encoder": True}, "wm.freeze_encoder"),
])
def test_a_bad_value_names_its_field(change, field):
    with pytest.raises(ConfigError, match=rf"^{field} "):
        validate(replace(Config(), **change))


def test_unknown_fields_and_groups_in_a_saved_config_are_named():
    with pytest.raises(ConfigError, match=r"\['agent.nope'\]"):
        from_dict({"agent": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"\['bc.nope'\]"):
        from_dict({"bc": {"nope": 3}})
    with pytest.raises(ConfigError, match="mapping"):
        from_dict(["task"])


def test_every_learning_field_conflicts_on_resume_and_steering_fields_never_do():
    saved = Config()
    flat = flatten(saved)
    for key, value in flat.items():
        other = (not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float))
                 else "x" if isinstance(value, str) or value is None else value)
        if key == "method":
            other = "bc"
        conflicts = resume_conflicts(saved, replace(saved, **{key: other}))
        assert bool(conflicts) == (key not in STEERING_FIELDS), key
    both = resume_conflicts(saved, replace(saved, seed=1, **{"agent.alpha": 1.0}))
    assert [c.split(":")[0] for c in both] == ["seed", "agent.alpha"]


def test_long_preset_is_the_default_recipe_at_a_longer_budget_with_a_frozen_representation():
    """`long` learns as `default` does but for one documented departure (the representation frozen after
    pretraining, issue 9 rounds 10-13); everything else that differs only steers the run."""
    default, long = flatten(PRESETS["default"]), flatten(PRESETS["long"])
    differing = {key for key, value in long.items() if default[key] != value}
    assert differing - STEERING_FIELDS == {"wm.freeze_representation"}
    assert long["wm.freeze_representation"] and not default["wm.freeze_representation"]
    assert differing & STEERING_FIELDS == {"env_steps", "eval_every", "checkpoint_every"}
    assert long["env_steps"] >= 10 * default["env_steps"]


@pytest.mark.parametrize("method", ["vmail", "bc", "dac"])
def test_the_long_preset_freezes_only_cmils_representation(method):
    """VMAIL has no pretraining to freeze after, BC and DAC no world model: for them `long` is the `default`
    recipe at a longer budget, so a run of theirs saved before the freeze still resumes."""
    cfg = apply_method(replace(PRESETS["long"], method=method))
    validate(cfg)
    before = apply_method(replace(PRESETS["long"], method=method, **{"wm.freeze_representation": False}))
    assert not cfg.wm.freeze_representation and cfg == before  # every field, not only the learning ones
    assert apply_method(replace(PRESETS["long"], method="cmil")).wm.freeze_representation


def test_registered_methods_are_the_config_choices():
    choices = set(typing.get_args(typing.get_type_hints(Config)["method"]))
    assert set(method_classes()) == choices


def test_configs_saved_before_the_bc_group_still_load():
    from cmil.config_io import from_dict, to_dict
    from cmil.presets import PRESETS

    data = to_dict(PRESETS["default"])
    bc = data.pop("bc")
    data.update({f"bc_{k}": bc[k] for k in ("steps", "batch", "lr", "augment")})  # the fields it had then
    assert from_dict(data) == PRESETS["default"]


def test_configs_saved_before_anchor_target_read_their_anchor_from_teacher():
    data = to_dict(replace(PRESETS["default"], anchor_from="runs/bc_s100"))
    del data["agent"]["anchor_target"]   # the field came later; then anchor_from alone named the teacher
    assert from_dict(data).agent.anchor_target == "bc"
    data = to_dict(replace(PRESETS["default"], **{"agent.anchor_target": "pretrained"}))
    del data["agent"]["anchor_target"]
    assert from_dict(data).agent.anchor_target == "pretrained"   # no teacher named: the field's default


def test_network_sizes_are_config_fields():
    """bc.cnn_depth / bc.units size pixel BC's network; wm.encoder_depth the world model's encoder alone."""
    import torch

    from cmil.methods.bc import BC

    bc = BC(replace(Config(method="bc"), **{"bc.cnn_depth": 8, "bc.units": 24}), 4, torch.device("cpu")).net
    assert bc.encoder.net[0].out_channels == 8 and bc.head[0].out_features == 24
    with pytest.raises(ConfigError, match=r"^wm.encoder_depth "):
        validate(replace(Config(), **{"wm.encoder_depth": -1}))
    dry = dry_run_preset(replace(PRESETS["default"], **{"wm.encoder_depth": 32}))
    assert dry.wm.encoder_depth == 8 and dry_run_preset(PRESETS["default"]).wm.encoder_depth == 0


def test_bc_keypoint_encoder_reads_positions():
    """bc.encoder 'keypoints': the spatial softmax returns the coordinates of each map's peak, and pixel BC's
    policy (and so CMIL's teacher) gets the keypoint encoder with bc.keypoints maps; 'both' reads the conv
    features and the keypoints side by side."""
    import torch

    from cmil.methods.bc import BC
    from cmil.models.networks import ConvEncoder, KeypointEncoder, SpatialSoftmax

    maps = torch.full((2, 3, 5, 7), -1e4)
    peaks = [(0, 0), (4, 6), (2, 3)]                           # (row, col) of each map's peak
    for k, (r, c) in enumerate(peaks):
        maps[:, k, r, c] = 0.0
    coords = SpatialSoftmax(5, 7)(maps).view(2, 3, 2)
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])  # (x, y) in [-1, 1]
    torch.testing.assert_close(coords, expected.expand(2, 3, 2))

    cfg = replace(Config(method="bc"), **{"bc.cnn_depth": 4, "bc.units": 8, "bc.encoder": "keypoints",
                                          "bc.keypoints": 5})
    net = BC(cfg, 4, torch.device("cpu")).net
    assert isinstance(net.encoder, KeypointEncoder) and net.encoder.out_dim == 10
    image = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    out = net(image)
    assert out.shape == (2, 3, 4) and out.abs().max() <= 1
    out.sum().backward()
    assert net.encoder.keypoints.log_temperature.grad is not None
    conv = BC(Config(method="bc"), 4, torch.device("cpu")).net
    assert isinstance(conv.encoder, ConvEncoder) and conv.keypoint_encoder is None
    both = BC(replace(cfg, **{"bc.encoder": "both"}), 4, torch.device("cpu")).net
    assert isinstance(both.encoder, ConvEncoder) and isinstance(both.keypoint_encoder, KeypointEncoder)
    assert both.head[0].in_features == both.encoder.out_dim + 10 and both(image).shape == (2, 3, 4)
    with pytest.raises(ConfigError, match=r"^bc.keypoints "):
        validate(replace(Config(), **{"bc.keypoints": 0}))
