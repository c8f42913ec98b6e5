import dataclasses
import math
import re

import pytest
import yaml

from dqn_stable.config import (
    AgentConfig,
    Config,
    ConfigError,
    NetworkConfig,
    OptimizerConfig,
    ReplayConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_overrides,
    validate,
)


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def with_key(dotted, value):
    """A config dict that sets only ``dotted`` to ``value``."""
    *sections, leaf = dotted.split(".")
    data = {leaf: value}
    for section in reversed(sections):
        data = {section: data}
    return data


# --- Defaults -------------------------------------------------------------------------------------


def test_defaults_are_the_papers_target_free_setting():
    cfg = Config()
    assert (cfg.name, cfg.seed) == ("", 0)
    assert (cfg.env.id, cfg.env.kwargs) == ("CartPole-v1", {})
    assert cfg.network.hidden == (128, 128)
    assert cfg.network.activation == "tgelu"
    assert cfg.network.tgelu_range == (-1.0, 1.0)
    assert cfg.agent == AgentConfig(
        target="none",
        target_update_every=1,
        polyak_tau=0.005,
        double=False,
        loss="mse",
        gamma=0.99,
        output_clip=1.0,
        global_clip=None,
    )
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("sgd", 3e-4)
    assert cfg.replay == ReplayConfig(capacity=1_000_000, batch_size=256, learning_starts=5000)
    train = cfg.train
    assert (train.total_steps, train.train_every, train.gradient_steps) == (1_000_000, 1, 1)
    assert (train.log_every, train.torch_threads) == (1000, 1)
    assert (cfg.exploration.start, cfg.exploration.end) == (1.0, 0.1)
    assert cfg.exploration.decay_steps == 100_000
    assert (cfg.eval.every, cfg.eval.episodes, cfg.eval.epsilon) == (5000, 5, 0.0)
    assert cfg.eval.seed_offset == 10_000
    assert cfg.checkpoint.every == 50_000
    validate(cfg)


def test_configs_are_frozen_and_mutable_defaults_are_not_shared():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().seed = 1
    assert Config().env.kwargs is not Config().env.kwargs


# --- Loading --------------------------------------------------------------------------------------


def test_empty_file_gives_defaults_named_after_the_file(tmp_path):
    cfg = load_config(write(tmp_path, "", name="cartpole_sgd.yaml"))
    assert cfg == Config(name="cartpole_sgd")


def test_load_yaml_file(tmp_path):
    path = write(
        tmp_path,
        "name: my-run\n"
        "seed: 3\n"
        "env:\n"
        "  id: Acrobot-v1\n"
        "  kwargs: {max_episode_steps: 200}\n"
        "network:\n"
        "  hidden: [64, 32]\n"
        "  tgelu_range: [-2, 0.5]\n"
        "agent:\n"
        "  target: polyak\n"
        "  output_clip: null\n"
        "  double: true\n"
        "optimizer: {name: adam}\n"
        "exploration:  # every key commented out is an empty section\n",
    )
    cfg = load_config(path)
    assert (cfg.name, cfg.seed) == ("my-run", 3)
    assert cfg.env.id == "Acrobot-v1"
    assert cfg.env.kwargs == {"max_episode_steps": 200}
    assert cfg.network.hidden == (64, 32)
    assert cfg.network.tgelu_range == (-2.0, 0.5)
    assert all(type(x) is float for x in cfg.network.tgelu_range)
    assert (cfg.agent.target, cfg.agent.output_clip, cfg.agent.double) == ("polyak", None, True)
    assert cfg.optimizer == OptimizerConfig(name="adam", lr=3e-4)
    assert cfg.exploration == Config().exploration


def test_lr_written_1e_minus_3_is_a_float_in_yaml_and_in_overrides(tmp_path):
    path = write(tmp_path, "optimizer:\n  lr: 1e-3\n")
    from_file = load_config(path).optimizer.lr
    from_override = load_config(write(tmp_path, ""), ["optimizer.lr=1e-3"]).optimizer.lr
    assert type(from_file) is float and from_file == 0.001
    assert type(from_override) is float and from_override == 0.001
    assert parse_overrides(["x=-1e5"]) == [("x", -100000.0)]


@pytest.mark.parametrize("value", ["5e4", "50000.0", "'5e4'", "'50_000'", "50_000"])
def test_int_field_accepts_integral_numbers_written_as_floats_or_strings(tmp_path, value):
    cfg = load_config(write(tmp_path, f"train:\n  total_steps: {value}\n"))
    assert cfg.train.total_steps == 50_000
    assert type(cfg.train.total_steps) is int


# --- Overrides ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "dotted", "expected"),
    [
        ("train.total_steps=5e4", "train.total_steps", 50_000),
        ("network.hidden=[64,64]", "network.hidden", (64, 64)),
        ("agent.output_clip=null", "agent.output_clip", None),
        ("env.kwargs.max_episode_steps=200", "env.kwargs", {"max_episode_steps": 200}),
        ("agent.target=hard", "agent.target", "hard"),
        ("env.id=my_pkg.envs:Maze-v0", "env.id", "my_pkg.envs:Maze-v0"),
        ("name=ablation", "name", "ablation"),
        ("agent.double=true", "agent.double", True),
    ],
)
def test_override_sets_value(tmp_path, override, dotted, expected):
    cfg = load_config(write(tmp_path, ""), [override])
    section, _, leaf = dotted.rpartition(".")
    holder = getattr(cfg, section) if section else cfg
    assert getattr(holder, leaf) == expected


def test_override_beats_file_and_later_override_wins(tmp_path):
    path = write(tmp_path, "agent:\n  gamma: 0.9\n  loss: huber\n")
    cfg = load_config(path, ["agent.gamma=0.5", "agent.gamma=0.25"])
    assert (cfg.agent.gamma, cfg.agent.loss) == (0.25, "huber")


def test_parse_overrides_parses_values_as_yaml():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=x=y", "e="]) == [
        ("a.b", 1),
        ("c", [1, 2]),
        ("d", "x=y"),
        ("e", None),
    ]


def test_apply_overrides_copies_and_creates_missing_sections():
    data = {"agent": {"gamma": 0.9}, "env": None}
    result = apply_overrides(data, ["agent.gamma=0.5", "env.kwargs.a=1", "replay.capacity=10"])
    assert result == {
        "agent": {"gamma": 0.5},
        "env": {"kwargs": {"a": 1}},
        "replay": {"capacity": 10},
    }
    assert data == {"agent": {"gamma": 0.9}, "env": None}


@pytest.mark.parametrize("override", ["agent.gamma", "=0.9", "agent..gamma=0.9", ".gamma=1"])
def test_malformed_override(override):
    with pytest.raises(ConfigError, match=r"^malformed override .*expected dotted\.key=value"):
        apply_overrides({}, [override])


def test_override_with_invalid_yaml_value():
    with pytest.raises(ConfigError, match=r"override 'network\.hidden=\[64,' .*not valid YAML"):
        parse_overrides(["network.hidden=[64,"])


def test_override_under_a_plain_value():
    with pytest.raises(ConfigError, match=r"'agent\.gamma' is a value, not a mapping"):
        apply_overrides({}, ["agent.gamma.x=1"])
    with pytest.raises(ConfigError, match=r"'env\.kwargs' is 5, not a mapping"):
        apply_overrides({"env": {"kwargs": 5}}, ["env.kwargs.x=1"])


def test_override_with_unknown_key_suggests_closest():
    expected = "unknown key 'agent.gama' in override 'agent.gama=0.9'; did you mean 'agent.gamma'?"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        apply_overrides({}, ["agent.gama=0.9"])


# --- Bad input ------------------------------------------------------------------------------------


def test_unknown_key_in_file_suggests_closest(tmp_path):
    path = write(tmp_path, "agent:\n  gama: 0.9\n")
    expected = f"unknown key 'agent.gama' in {path}; did you mean 'agent.gamma'?"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ({"agnet": {}}, "did you mean 'agent'?"),
        ({"gamma": 0.9}, "did you mean 'agent.gamma'?"),
        ({"train": {"learning_starts": 10}}, "did you mean 'replay.learning_starts'?"),
        ({"replay": {"zzz": 1}}, "valid keys under 'replay' are: capacity, batch_size"),
    ],
)
def test_unknown_key_hint(data, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        config_from_dict(data)


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^section 'agent' in <dict> must be a mapping, got \[1"):
        config_from_dict({"agent": [1, 2]})


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- agent\n- env\n")
    with pytest.raises(ConfigError, match=rf"^top level of {re.escape(str(path))} must be a map"):
        load_config(path)


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("agent.gamma", "abc", "a number"),
        ("agent.gamma", True, "a number"),
        ("agent.gamma", [0.9], "a number"),
        ("train.total_steps", 1.5, "an integer"),
        ("train.total_steps", True, "an integer"),
        ("train.total_steps", "many", "an integer"),
        ("agent.double", "yes", "true or false"),
        ("agent.double", 1, "true or false"),
        ("env.id", 5, "a string"),
        ("network.activation", "elu", "one of 'tgelu', 'gelu', 'relu', 'tanh', 'sigmoid'"),
        ("agent.target", None, "one of 'none', 'hard', 'polyak'"),
        ("network.hidden", [64, "a"], "a list of integers"),
        ("network.hidden", 64, "a list of integers"),
        ("network.tgelu_range", [-1.0], "a list of 2 numbers"),
        ("network.tgelu_range", [-1.0, 0.5, 1.0], "a list of 2 numbers"),
        ("env.kwargs", [1], "a mapping with string keys"),
        ("env.kwargs", {1: 2}, "a mapping with string keys"),
        ("agent.output_clip", "off", "a number or null"),
    ],
)
def test_wrong_type(dotted, value, expected):
    message = f"{dotted} = {value!r} in <dict>: expected {expected}"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        config_from_dict(with_key(dotted, value))


@pytest.mark.parametrize(
    ("dotted", "value", "rule"),
    [
        ("seed", -1, "must be >= 0"),
        ("env.id", "", "must name an env"),
        ("env.id", "  ", "must name an env"),
        ("network.hidden", [], "must be a non-empty list of layer widths >= 1"),
        ("network.hidden", [64, 0], "must be a non-empty list of layer widths >= 1"),
        ("agent.target_update_every", 0, "must be >= 1"),
        ("agent.polyak_tau", 0.0, "must be in (0, 1]"),
        ("agent.polyak_tau", 1.5, "must be in (0, 1]"),
        ("agent.gamma", -0.1, "must be in [0, 1]"),
        ("agent.gamma", 1.01, "must be in [0, 1]"),
        ("agent.gamma", math.nan, "must be in [0, 1]"),
        ("agent.output_clip", -1.0, "must be a finite norm > 0, or null"),
        ("agent.output_clip", 0.0, "must be a finite norm > 0, or null"),
        ("agent.output_clip", math.inf, "must be a finite norm > 0, or null"),
        ("agent.global_clip", -0.5, "must be a finite norm > 0, or null"),
        ("optimizer.lr", 0.0, "must be finite and > 0"),
        ("optimizer.lr", -1e-3, "must be finite and > 0"),
        ("optimizer.lr", math.inf, "must be finite and > 0"),
        ("replay.capacity", 0, "must be >= 1"),
        ("replay.batch_size", 0, "must be >= 1"),
        ("replay.learning_starts", -1, "must be >= 0"),
        ("train.total_steps", 0, "must be >= 1"),
        ("train.train_every", 0, "must be >= 1"),
        ("train.gradient_steps", 0, "must be >= 1"),
        ("train.log_every", 0, "must be >= 1"),
        ("train.torch_threads", 0, "must be >= 1"),
        ("exploration.start", 1.5, "must be in [0, 1]"),
        ("exploration.end", -0.1, "must be in [0, 1]"),
        ("exploration.decay_steps", 0, "must be >= 1"),
        ("eval.every", 0, "must be >= 1"),
        ("eval.episodes", 0, "must be >= 1"),
        ("eval.epsilon", 2.0, "must be in [0, 1]"),
        ("eval.seed_offset", -5, "must be >= 0"),
        ("checkpoint.every", 0, "must be >= 1"),
    ],
)
def test_out_of_range(dotted, value, rule):
    data = with_key(dotted, value)
    if dotted == "train.total_steps":  # keep learning_starts < total_steps out of the way
        data["replay"] = {"learning_starts": 0}
    shown = repr(tuple(value) if isinstance(value, list) else value)
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{dotted} = {shown} in <dict>: {rule}')}"):
        config_from_dict(data)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "CPU", ""])
def test_bad_device(device):
    message = f"device = {device!r} in <dict>: must be 'cpu', 'cuda', 'cuda:N' or 'auto'"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        config_from_dict({"device": device})


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto"])
def test_good_device_names_validate_on_any_machine(device):
    assert config_from_dict({"device": device}).device == device  # whether CUDA exists: at start


@pytest.mark.parametrize(
    "tgelu_range",
    [[0.0, 1.0], [-1.0, 0.0], [1.0, -1.0], [-math.inf, 1.0], [-1.0, math.nan]],
)
def test_bad_tgelu_range(tgelu_range):
    with pytest.raises(ConfigError, match=r"^network\.tgelu_range = .* with tl < 0 < tr"):
        config_from_dict({"network": {"tgelu_range": tgelu_range}})


def test_batch_larger_than_capacity():
    expected = "replay.batch_size = 512 in <dict>: must be <= replay.capacity (256)"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        config_from_dict({"replay": {"capacity": 256, "batch_size": 512}})


@pytest.mark.parametrize("learning_starts", [1000, 1001])
def test_learning_starts_not_before_total_steps(learning_starts):
    data = {"train": {"total_steps": 1000}, "replay": {"learning_starts": learning_starts}}
    with pytest.raises(ConfigError, match=r"must be < train\.total_steps \(1000\).*never update"):
        config_from_dict(data)


def test_validate_checks_a_config_built_in_code():
    cfg = Config(network=NetworkConfig(tgelu_range=(0.5, 1.0)))
    with pytest.raises(ConfigError, match=r"^network\.tgelu_range = \(0\.5, 1\.0\) in <config>"):
        validate(cfg)


def test_errors_from_overrides_name_them_in_the_source(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"agent\.gamma = 2\.0 in .*cfg\.yaml with overrides"):
        load_config(path, ["agent.gamma=2.0"])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^config file not found: {re.escape(str(path))}"):
        load_config(path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "seed: 1\nagent:\n  gamma: 0.9\n    double: true\n")
    expected = f"invalid YAML in {path} at line 4: mapping values are not allowed here"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_config(path)


def test_yaml_duplicate_key_names_its_line(tmp_path):
    path = write(tmp_path, "agent:\n  gamma: 0.9\nseed: 1\nagent:\n  loss: huber\n")
    expected = f"invalid YAML in {path} at line 4: duplicate key 'agent'"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_config(path)


def test_yaml_merge_key_may_be_overridden(tmp_path):
    text = "env:\n  kwargs:\n    base: &b {a: 1, b: 2}\n    <<: *b\n    a: 3\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.env.kwargs == {"base": {"a": 1, "b": 2}, "a": 3, "b": 2}


def test_yaml_python_tags_are_refused(tmp_path):
    path = write(tmp_path, "seed: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match=rf"^invalid YAML in {re.escape(str(path))} at line 1"):
        load_config(path)


# --- Round trip -----------------------------------------------------------------------------------


def test_config_to_dict_is_plain_yaml():
    data = config_to_dict(Config())
    assert list(data) == [
        "name",
        "seed",
        "device",
        "env",
        "network",
        "agent",
        "optimizer",
        "replay",
        "train",
        "exploration",
        "eval",
        "checkpoint",
    ]
    assert data["network"]["hidden"] == [128, 128]
    assert data["network"]["tgelu_range"] == [-1.0, 1.0]
    assert yaml.safe_load(yaml.safe_dump(data)) == data


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "name=rt",
            "seed=7",
            "device=auto",
            "env.kwargs={max_episode_steps: 200, render_mode: null}",
            "network.hidden=[256, 64, 32]",
            "network.tgelu_range=[-0.3, 2.5]",
            "agent.target=polyak",
            "agent.polyak_tau=1e-3",
            "agent.output_clip=null",
            "agent.global_clip=10",
            "optimizer.lr=1e-5",
            "exploration.end=0.05",
        ],
    ],
)
def test_dump_then_load_gives_an_equal_config(tmp_path, overrides):
    cfg = config_from_dict(apply_overrides({}, overrides))
    path = tmp_path / "resolved.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg


# --- Image observations, Atari preprocessing, RMSprop (issue 6) -----------------------------------


@pytest.mark.parametrize(("dotted", "value", "rule"), [
    ("env.frame_stack", 0, "must be >= 1"),
    ("env.atari.frame_skip", 0, "must be >= 1"),
    ("env.atari.screen_size", 0, "must be >= 1"),
    ("env.atari.noop_max", -1, "must be >= 0"),
    ("optimizer.eps", -1e-3, "must be >= 0"),
    ("optimizer.eps", math.inf, "must be finite"),
    ("optimizer.alpha", 1.0, "must be in [0, 1)"),
    ("optimizer.alpha", -0.5, "must be in [0, 1)"),
])
def test_image_and_rmsprop_keys_out_of_range(dotted, value, rule):
    data = with_key("env.id", "ALE/Pong-v5")
    node = data
    *sections, leaf = dotted.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[leaf] = value
    message = f"{dotted} = {value!r} in <dict>: {rule}"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        config_from_dict(data)


def test_new_keys_have_their_defaults_and_take_overrides():
    cfg = Config()
    assert (cfg.network.torso, cfg.env.frame_stack) == ("auto", 1)
    assert dataclasses.asdict(cfg.env.atari) == {
        "frame_skip": 4, "screen_size": 84, "noop_max": 30, "terminal_on_life_loss": False,
        "clip_rewards": False,
    }
    assert (cfg.optimizer.alpha, cfg.optimizer.eps, cfg.optimizer.centered) == (0.99, 1e-8, False)
    data = apply_overrides({}, [
        "env.id=ALE/Pong-v5", "env.atari.clip_rewards=true", "network.torso=nature",
        "optimizer.name=rmsprop", "optimizer.centered=true",
    ])
    cfg = config_from_dict(data)
    assert (cfg.env.atari.clip_rewards, cfg.network.torso) == (True, "nature")
    assert (cfg.optimizer.name, cfg.optimizer.centered) == ("rmsprop", True)


def test_unknown_torso_names_the_choices():
    with pytest.raises(ConfigError, match=re.escape(
        "network.torso = 'cnn' in <dict>: expected one of 'auto', 'mlp', 'minatar', 'nature'"
    )):
        config_from_dict({"network": {"torso": "cnn"}})


def test_atari_settings_are_refused_for_other_envs():
    with pytest.raises(ConfigError, match=re.escape(
        "env.atari.clip_rewards = True in <dict>: env.atari applies only to ALE ids (e.g. "
        "'ALE/Pong-v5'), not 'MinAtar/Breakout-v1'; leave it at False"
    )):
        config_from_dict({"env": {"id": "MinAtar/Breakout-v1", "atari": {"clip_rewards": True}}})
    # defaults written out are fine anywhere; any setting is fine for ALE ids, 'module:' form too
    config_from_dict({"env": {"id": "CartPole-v1", "atari": {"frame_skip": 4}}})
    config_from_dict({"env": {"id": "ale_py:ALE/Pong-v5", "atari": {"noop_max": 0}}})


def test_ale_frameskip_belongs_in_env_atari():
    with pytest.raises(ConfigError, match=re.escape(
        "env.kwargs.frameskip = 4 in <dict>: ALE envs are made with frameskip=1 and skip frames "
        "in preprocessing; set env.atari.frame_skip instead"
    )):
        config_from_dict({"env": {"id": "ALE/Pong-v5", "kwargs": {"frameskip": 4}}})
