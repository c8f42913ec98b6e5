"""Run configuration: the typed schema, its defaults, YAML loading, overrides and validation.

The defaults are the paper's target-free DQN setting (arXiv:2305.12125): no target network, tGELU
hidden layers, plain SGD and a clip on the output layer's gradient. They live here and nowhere
else; every ablation is a YAML file or a ``dotted.key=value`` override on top of them.

``load_config`` reads a YAML file, applies overrides, converts each value to its field's annotated
type and validates the result. Every problem with user input raises :class:`ConfigError` with one
line naming the key (or file), the bad value and what would be accepted.
"""

import copy
import dataclasses
import difflib
import functools
import math
import numbers
import re
import types
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "AgentConfig",
    "AtariConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "ExplorationConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "ReplayConfig",
    "TrainConfig",
    "YamlLoader",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "is_ale_id",
    "load_config",
    "parse_overrides",
    "validate",
]


@dataclass(frozen=True, kw_only=True)
class AtariConfig:
    """Preprocessing of ALE ids ('ALE/Pong-v5'): Gymnasium's ``AtariPreprocessing`` (frame skip
    with max-pooling of the last two frames, grayscale, square resize, random no-ops at reset),
    plus the two training-only signals of Mnih et al. (2015). Only for ALE ids; every other id
    must leave this section at its defaults."""

    frame_skip: int = 4
    """Emulator frames per env step (the action repeats; the last two frames are max-pooled).
    Every env-step count in the config (train.total_steps, ...) counts these agent steps."""
    screen_size: int = 84
    """Side of the square grayscale frame, in pixels."""
    noop_max: int = 30
    """Up to this many no-op actions (a uniform draw from 1..noop_max) after each new game; 0
    disables."""
    terminal_on_life_loss: bool = False
    """Training env only: a lost life ends the episode (terminated, so the TD target does not
    bootstrap across it) and the next reset continues the same game with a no-op step. Training
    episodes (charts/episodic_return) are then single lives; evaluation plays whole games."""
    clip_rewards: bool = False
    """Training env only: rewards clipped to [-1, 1] (their sign, as ALE rewards are integers).
    Training returns are then clipped too; evaluation returns are the game score."""


def is_ale_id(env_id: str) -> bool:
    """Whether ``env_id`` ('ALE/Pong-v5', or 'module:ALE/Pong-v5') names an Arcade Learning
    Environment game, which gets the ``env.atari`` preprocessing."""
    return env_id.rpartition(":")[2].startswith("ALE/")


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """The training environment (evaluation uses the same one, seeded apart)."""

    id: str = "CartPole-v1"
    """Gymnasium id, or 'module:Env-v0' to import ``module`` (which registers the env) first.
    'MinAtar/<Game>-v1' and 'ALE/<Game>-v5' ids need the minatar and atari extras."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``, e.g. {max_episode_steps: 200}; unchecked."""
    num_envs: int = 1
    """Copies of the env collecting side by side; one vector step is num_envs env steps."""
    vectorization: Literal["sync", "async"] = "sync"
    """With num_envs > 1: 'sync' steps the copies in turn in this process, 'async' steps each in
    its own process (worth it when an env step costs more than passing its result back)."""
    frame_stack: int = 1
    """Observations stacked on a new leading axis: k > 1 makes each observation (k, *frame), the
    episode's last k frames (padded with its first), and stores each frame once in replay. ALE
    frames always get this axis, so an ALE observation is (k, screen_size, screen_size)."""
    atari: AtariConfig = field(default_factory=AtariConfig)
    """Preprocessing for ALE ids only."""


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """The Q-network: a torso (an MLP, or convolutions then fully connected layers) and a linear
    output layer with one Q-value per action."""

    torso: Literal["auto", "mlp", "minatar", "nature"] = "auto"
    """'mlp' flattens the observation; 'minatar' (one 3x3 conv, 16 channels; Young & Tian 2019)
    and 'nature' (convs 32 8x8/4, 64 4x4/2, 64 3x3/1; Mnih et al. 2015) take (C, H, W) images, or
    stacked (k, C, H, W) ones as k*C channels, before the hidden layers. 'auto': 'mlp' for 1-D and
    2-D observations, and for images 'nature' when H and W are both >= 36, else 'minatar'."""
    hidden: tuple[int, ...] = (128, 128)
    """Widths of the fully connected hidden layers (units per layer), input side first."""
    activation: Literal["tgelu", "gelu", "relu", "tanh", "sigmoid"] = "tgelu"
    """Activation of every hidden layer, convolutional ones included; 'tgelu' is the paper's
    bounded, truncated GELU."""
    tgelu_range: tuple[float, float] = (-1.0, 1.0)
    """The window (tl, tr) of pre-activations inside which tGELU follows GELU; tl < 0 < tr."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """The TD update: what it bootstraps from, its loss and its gradient clips."""

    target: Literal["none", "hard", "polyak"] = "none"
    """Bootstrap network: 'none' = the online network itself (the paper), or a hard/Polyak copy."""
    target_update_every: int = 1
    """Gradient updates between target updates (a hard copy or a Polyak blend)."""
    polyak_tau: float = 0.005
    """Weight of the online parameters in each Polyak blend, in (0, 1]; only for 'polyak'."""
    double: bool = False
    """Double DQN: the online network picks the next action, the bootstrap network scores it."""
    loss: Literal["mse", "huber"] = "mse"
    """Loss on the TD error: squared error or Huber."""
    gamma: float = 0.99
    """Discount factor per env step, in [0, 1]."""
    output_clip: float | None = 1.0
    """Max L2 norm of the output layer's gradient in each gradient update; null disables."""
    global_clip: float | None = None
    """Max global L2 norm of the gradient over all parameters; null disables."""


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """The optimizer of the Q-network."""

    name: Literal["sgd", "adam", "rmsprop"] = "sgd"
    """Optimizer: 'sgd', 'adam' or 'rmsprop' (the MinAtar paper's DQN: lr 2.5e-4, alpha 0.95,
    eps 0.01, centered)."""
    lr: float = 3e-4
    """Learning rate (step size of each gradient update)."""
    alpha: float = 0.99
    """RMSprop only: decay per gradient update of the running mean of squared gradients, in
    [0, 1) (the MinAtar paper's 'squared gradient momentum')."""
    eps: float = 1e-8
    """Adam and RMSprop: added to the denominator, i.e. to the root of the squared-gradient mean
    (the MinAtar paper's 'minimum squared gradient' 0.01 is used this way); >= 0."""
    centered: bool = False
    """RMSprop only: divide by the gradient's running standard deviation (its running mean
    subtracted) instead of its root mean square, as the MinAtar paper's DQN does."""


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """The uniform replay buffer."""

    capacity: int = 1_000_000
    """Buffer size in transitions; the oldest are overwritten once it is full."""
    batch_size: int = 256
    """Transitions sampled for each gradient update."""
    learning_starts: int = 5000
    """Env steps of uniform-random actions before the first gradient update."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop's schedule."""

    total_steps: int = 1_000_000
    """Length of the run in env steps."""
    train_every: int = 1
    """Env steps between update rounds."""
    gradient_steps: int = 1
    """Gradient updates per update round."""
    log_every: int = 1000
    """Env steps between scalar log points."""
    torch_threads: int = 1
    """Intra-op torch threads; 1 because on small machines more threads slow small-batch updates."""


@dataclass(frozen=True, kw_only=True)
class ExplorationConfig:
    """The epsilon-greedy schedule of the behaviour policy."""

    start: float = 1.0
    """Epsilon at env step 0, in [0, 1]."""
    end: float = 0.1
    """Epsilon from env step decay_steps on, in [0, 1]."""
    decay_steps: int = 100_000
    """Env steps of the linear decay from start to end, counted from step 0."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Periodic evaluation of the epsilon-greedy policy on a separately seeded env."""

    every: int = 5000
    """Env steps between evaluations."""
    episodes: int = 5
    """Episodes per evaluation."""
    epsilon: float = 0.0
    """Epsilon of the evaluation policy, in [0, 1]; 0 is greedy."""
    seed_offset: int = 10_000
    """The eval env is seeded with seed + seed_offset, so its episodes differ from training's."""


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Periodic checkpoints of the run."""

    every: int = 50_000
    """Env steps between checkpoints."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole run. Build it with :func:`load_config` or :func:`config_from_dict`."""

    name: str = ""
    """Run name used in run-directory names; load_config uses the file's stem when it is unset."""
    seed: int = 0
    """Seed of the run (training env, networks, exploration); >= 0."""
    device: str = "cpu"
    """Where the networks and the updates run: ``cpu`` (the default), ``cuda``, ``cuda:N``, or
    ``auto`` (CUDA when this machine has it, else CPU). The replay buffer stays in CPU memory."""
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


class ConfigError(ValueError):
    """A config file, dict or override that cannot become a valid :class:`Config`."""


# --- YAML -----------------------------------------------------------------------------------------


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3``, ``5e4`` and ``-1e5`` as floats and refuses duplicate keys.

    YAML 1.1 (PyYAML) wants a dot and a signed exponent (``1.0e-3``), so it loads ``1e-3`` as the
    string '1e-3', which then slips past any ``isinstance(x, float)`` check. A repeated key would
    silently replace the first one; with a repeated section, every key set in the first is lost.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports the unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {_one_line(str(exc))}") from None
    try:
        data = yaml.load(text, Loader=YamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = _one_line(exc.problem or "syntax error")
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    _require_top_level_mapping(data, str(path))
    return data


def _require_top_level_mapping(data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"top level of {source} must be a mapping of sections (e.g. 'agent: {{gamma: 0.99}}'), "
            f"got {type(data).__name__} {data!r}"
        )


# --- Schema helpers -------------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation, in declaration order."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


@functools.cache
def _leaf_keys(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Every dotted key of a plain (non-section) field under ``cls``."""
    keys: list[str] = []
    for name, hint in _field_types(cls).items():
        dotted = _join(prefix, name)
        keys.extend(_leaf_keys(hint, dotted) if _is_section(hint) else [dotted])
    return tuple(keys)


def _unknown_key(cls: type, prefix: str, key: Any, where: str) -> ConfigError:
    """The error for ``key`` not being a field of section ``cls`` (at ``prefix``)."""
    names = list(_field_types(cls))
    close = difflib.get_close_matches(str(key), names, n=1)
    if close:
        hint = f"did you mean '{_join(prefix, close[0])}'?"
    else:
        # A known key in the wrong section, e.g. a top-level 'gamma' meant as 'agent.gamma'.
        moved = [k for k in _leaf_keys() if difflib.get_close_matches(str(key), [k.split(".")[-1]])]
        if moved:
            hint = "did you mean " + " or ".join(f"'{k}'" for k in moved) + "?"
        else:
            hint = f"valid keys under '{prefix}' are: " if prefix else "valid top-level keys are: "
            hint += ", ".join(names)
    return ConfigError(f"unknown key '{_join(prefix, key)}' in {where}; {hint}")


# --- Type conversion ------------------------------------------------------------------------------


class _Mismatch(Exception):
    """Internal: a value does not fit an annotation; the caller turns it into a ConfigError."""


_TYPE_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
}


def _describe(hint: Any) -> str:
    """What ``hint`` accepts, in words for an error message."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if arm is type(None) else _describe(arm) for arm in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_TYPE_NAMES[args[0]][1]}"
        return f"a list of {len(args)} {_TYPE_NAMES[args[0]][1]}"
    if origin is dict:
        return "a mapping with string keys"
    return _TYPE_NAMES[hint][0]


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            value = float(value)
        except ValueError:
            raise _Mismatch from None
    # 5e4 reads as a float; accept it when it is a whole number.
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    raise _Mismatch


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise _Mismatch
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise _Mismatch from None


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` describes, or raise _Mismatch."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in args:
            if arm is not type(None):
                try:
                    return _convert(value, arm)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0]) for item in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(item, arm) for item, arm in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        return copy.deepcopy(dict(value))
    if hint is int:
        return _to_int(value)
    if hint is float:
        return _to_float(value)
    if hint in (bool, str):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    raise TypeError(f"config.py cannot convert to annotation {hint!r}; add a case to _convert")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """An instance of section ``cls`` from ``data``; absent fields keep their defaults."""
    if data is None:  # 'agent:' with every line below it commented out
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"section '{prefix}' in {source} must be a mapping, got {data!r}; "
            f"write '{prefix}:' followed by indented 'key: value' lines"
        )
    types_by_name = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in types_by_name:
            raise _unknown_key(cls, prefix, key, source)
        hint, dotted = types_by_name[key], _join(prefix, key)
        if _is_section(hint):
            kwargs[key] = _build(hint, value, dotted, source)
            continue
        try:
            kwargs[key] = _convert(value, hint)
        except _Mismatch:
            raise ConfigError(
                f"{dotted} = {value!r} in {source}: expected {_describe(hint)}"
            ) from None
    return cls(**kwargs)


# --- Validation -----------------------------------------------------------------------------------

_AT_LEAST_ONE = (
    "env.num_envs",
    "env.frame_stack",
    "env.atari.frame_skip",
    "env.atari.screen_size",
    "agent.target_update_every",
    "replay.capacity",
    "replay.batch_size",
    "train.total_steps",
    "train.train_every",
    "train.gradient_steps",
    "train.log_every",
    "train.torch_threads",
    "exploration.decay_steps",
    "eval.every",
    "eval.episodes",
    "checkpoint.every",
)
# Seeds must be >= 0 for numpy and Gymnasium; the eval seed is seed + eval.seed_offset.
_AT_LEAST_ZERO = (
    "seed", "replay.learning_starts", "eval.seed_offset", "env.atari.noop_max", "optimizer.eps"
)
_UNIT_INTERVAL = ("agent.gamma", "exploration.start", "exploration.end", "eval.epsilon")
_CLIPS = ("agent.output_clip", "agent.global_clip")


def _lookup(cfg: Config, dotted: str) -> Any:
    return functools.reduce(getattr, dotted.split("."), cfg)


def validate(cfg: Config, source: str = "<config>") -> None:
    """Raise ConfigError for the first out-of-range value or bad combination in ``cfg``.

    The comparisons are written so that NaN fails them.
    """

    def check(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key} = {_lookup(cfg, key)!r} in {source}: {rule}")

    for key in _AT_LEAST_ONE:
        check(_lookup(cfg, key) >= 1, key, "must be >= 1")
    for key in _AT_LEAST_ZERO:
        check(_lookup(cfg, key) >= 0, key, "must be >= 0")
    for key in _UNIT_INTERVAL:
        check(0.0 <= _lookup(cfg, key) <= 1.0, key, "must be in [0, 1]")
    for key in _CLIPS:
        clip = _lookup(cfg, key)
        ok = clip is None or (math.isfinite(clip) and clip > 0.0)
        check(ok, key, "must be a finite norm > 0, or null to disable the clip")
    check(bool(cfg.env.id.strip()), "env.id", "must name an env, e.g. 'CartPole-v1'")
    hidden = cfg.network.hidden
    check(
        len(hidden) > 0 and min(hidden) >= 1,
        "network.hidden",
        "must be a non-empty list of layer widths >= 1, e.g. [128, 128]",
    )
    tl, tr = cfg.network.tgelu_range
    check(
        math.isfinite(tl) and math.isfinite(tr) and tl < 0.0 < tr,
        "network.tgelu_range",
        "must be finite [tl, tr] with tl < 0 < tr, e.g. [-1.0, 1.0]",
    )
    check(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device) is not None,
        "device",
        "must be 'cpu', 'cuda', 'cuda:N' or 'auto'",
    )
    check(0.0 < cfg.agent.polyak_tau <= 1.0, "agent.polyak_tau", "must be in (0, 1]")
    lr = cfg.optimizer.lr
    check(math.isfinite(lr) and lr > 0.0, "optimizer.lr", "must be finite and > 0")
    check(math.isfinite(cfg.optimizer.eps), "optimizer.eps", "must be finite")
    check(0.0 <= cfg.optimizer.alpha < 1.0, "optimizer.alpha", "must be in [0, 1)")
    _validate_atari(cfg.env, source)
    check(
        cfg.replay.batch_size <= cfg.replay.capacity,
        "replay.batch_size",
        f"must be <= replay.capacity ({cfg.replay.capacity})",
    )
    check(
        cfg.train.total_steps % cfg.env.num_envs == 0,
        "train.total_steps",
        f"must be a multiple of env.num_envs ({cfg.env.num_envs}): each vector step takes "
        "num_envs env steps",
    )
    check(
        cfg.replay.learning_starts < cfg.train.total_steps,
        "replay.learning_starts",
        f"must be < train.total_steps ({cfg.train.total_steps}), or the run would never update",
    )


def _validate_atari(env: EnvConfig, source: str) -> None:
    """``env.atari`` only for ALE ids; ALE ids skip frames in preprocessing, not in ``make``."""
    if not is_ale_id(env.id):
        for f in dataclasses.fields(AtariConfig):
            value, default = getattr(env.atari, f.name), f.default
            if value != default:
                raise ConfigError(
                    f"env.atari.{f.name} = {value!r} in {source}: env.atari applies only to ALE "
                    f"ids (e.g. 'ALE/Pong-v5'), not {env.id!r}; leave it at {default!r}"
                )
    elif "frameskip" in env.kwargs:
        raise ConfigError(
            f"env.kwargs.frameskip = {env.kwargs['frameskip']!r} in {source}: ALE envs are made "
            "with frameskip=1 and skip frames in preprocessing; set env.atari.frame_skip instead"
        )


# --- Public entry points --------------------------------------------------------------------------


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config from nested mappings; ``source`` names them in errors."""
    _require_top_level_mapping(data, source)
    cfg = _build(Config, data, "", source)
    validate(cfg, source)
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(
            f"malformed override {item!r}: expected dotted.key=value, e.g. agent.gamma=0.9"
        )
    try:
        value = yaml.load(raw, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
        raise ConfigError(
            f"override {item!r} has a value that is not valid YAML ({_one_line(problem or '')}); "
            "quote it, e.g. key='value'"
        ) from None
    return parts, value


def _check_override_key(parts: list[str], item: str) -> None:
    """Check ``parts`` against the schema; keys inside a dict field (env.kwargs) are free."""
    cls: type = Config
    for depth, part in enumerate(parts):
        types_by_name = _field_types(cls)
        if part not in types_by_name:
            raise _unknown_key(cls, ".".join(parts[:depth]), part, f"override {item!r}")
        hint = types_by_name[part]
        if _is_section(hint):
            cls = hint
        elif get_origin(hint) is dict:
            return
        elif depth < len(parts) - 1:
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"override {item!r}: '{prefix}' is a value, not a mapping; "
                f"set it directly, e.g. {prefix}=..."
            )


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", ...]`` -> ``[("a.b", 1), ...]``; each value is parsed as YAML."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a sequence of 'key=value' strings, got {overrides!r}")
    return [(".".join(parts), value) for parts, value in map(_parse_override, overrides)]


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``dotted.key=value`` override set, in order."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a sequence of 'key=value' strings, got {overrides!r}")
    result = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = _parse_override(item)
        _check_override_key(parts, item)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:  # absent, or a section left empty in the file
                child = {}
            elif not isinstance(child, Mapping):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {item!r}: '{prefix}' is {child!r}, not a mapping; "
                    f"set it whole instead, e.g. {prefix}={{...}}"
                )
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = value
    return result


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``dotted.key=value`` overrides, convert and validate.

    A file (and overrides) that leave ``name`` unset get the file's stem as the run name.
    """
    path = Path(path)
    data = apply_overrides(_read_yaml(path), overrides)
    # Only an absent name is filled in, so a dumped Config with name '' loads back equal.
    data.setdefault("name", path.stem)
    source = f"{path} with overrides" if overrides else str(path)
    return config_from_dict(data, source)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """``cfg`` as nested dicts of YAML-safe values (tuples become lists), in field order."""
    return _plain(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML that :func:`load_config` reads back to an equal Config."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    Path(path).write_text(text, encoding="utf-8")
