"""dqn_stable: Deep Q-Learning without a target network (arXiv:2305.12125).

Hidden layers use tGELU, a bounded GELU; only the output layer's gradient is clipped; the TD target
bootstraps from the online network itself.
"""

from dqn_stable.activations import TGELU, tgelu
from dqn_stable.agent import DQNAgent, td_loss, td_target
from dqn_stable.clipping import OutputGradClip, clip_output_grad_
from dqn_stable.config import Config, ConfigError, load_config
from dqn_stable.networks import QNetwork
from dqn_stable.replay import ReplayBuffer

__version__ = "0.1.0"

__all__ = [
    "TGELU",
    "Config",
    "ConfigError",
    "DQNAgent",
    "OutputGradClip",
    "QNetwork",
    "ReplayBuffer",
    "clip_output_grad_",
    "load_config",
    "td_loss",
    "td_target",
    "tgelu",
]
