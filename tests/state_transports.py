"""Ways a replay buffer's ``state_dict()`` travels to a checkpoint and back, for round-trip tests:
``TRANSPORTS`` and ``TRANSPORT_IDS`` parametrize a test over them."""

import io
import pickle

import torch


def through_pickle(state):
    return pickle.loads(pickle.dumps(state))


def through_torch_save(state):
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    # numpy arrays are not on torch.load's weights_only allow-list.
    return torch.load(file, weights_only=False)


TRANSPORTS = [lambda state: state, through_pickle, through_torch_save]
TRANSPORT_IDS = ["in-memory", "pickle", "torch.save"]
