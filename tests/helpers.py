"""Shared test utilities (imported by test modules; not a test file)."""
import numpy as np


def randomize(net, seed=0):
    """Fill a network's parameters with He-scaled random values; BN variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith("weight") and v.ndim > 1:
            state[k] = rng.normal(0, np.sqrt(2.0 / np.prod(v.shape[1:])), v.shape)
        else:
            state[k] = rng.normal(0, 0.1, v.shape)
    return net.load_state_dict(state)
