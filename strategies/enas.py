"""ENAS over op x rule spaces: an RL controller samples one path of the supernet per step.

Pham, Guan, Zoph, Le & Dean 2018, "Efficient Neural Architecture Search via Parameter Sharing",
arXiv 1802.03268, as NNI 3.0 implements it (``nni.nas.strategy.ENAS``): NNI's path-sampling
supernet, NNI's controller (``TuningTrajectoryGenerator`` with its default LSTM PPO policy,
tianshou), NNI's schedule. Each epoch first trains the shared weights, one controller-sampled path
per weight batch; then the controller samples one path per batch of the architecture split, its
reward is that path's accuracy on the batch, and the policy is updated every ``batches_per_update``
trajectories (NNI's defaults: 20 batches, PPO batch 32, repeat 5, 5 updates).

Why not NNI's ``ENAS`` strategy itself: it runs only inside a Lightning evaluator (needing the
ConcatLoader shim of ``nni_bio.nas._compat`` on Lightning >= 2.1 and ``reward_metric_name``), cannot
report per-epoch results to an NNI trial, and its ``export()`` is one more *random* draw of the
controller. Here the derived architecture is the controller's greedy decoding (argmax at each step
of the autoregressive policy, deterministic), and ``val_acc`` is that architecture's accuracy with
the shared weights.

**Semantics over learning rules.** Single path: every weight step runs exactly one candidate per
choice, so each layer's error comes from one rule's feedback, never a blend. The controller sees
forward accuracies only; no architecture gradient flows through any backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nni_bio.strategies.oneshot.search import OneShotStrategy, Search


class ENAS(OneShotStrategy):
    """ENAS with NNI's controller (see module docstring).

    Args:
        batches_per_update: trajectories between policy updates.
        controller_lr: Adam learning rate of the policy (NNI's default policy uses 1e-4).
        hidden_dim: LSTM width of the policy.
        update_batch_size, update_repeat, update_times: PPO update settings (NNI's defaults).
        warmup_epochs: epochs without controller updates (weights train on random paths).
    """

    name = "enas"
    supernet_kind = "path"
    mixes_feedback = False

    def __init__(self, *, batches_per_update: int = 20, controller_lr: float = 1e-4, hidden_dim: int = 64,
                 update_batch_size: int = 32, update_repeat: int = 5, update_times: int = 5, warmup_epochs: int = 0):
        if batches_per_update < 1:
            raise ValueError(f"batches_per_update must be >= 1, got {batches_per_update}")
        self.batches_per_update, self.controller_lr, self.hidden_dim = batches_per_update, controller_lr, hidden_dim
        self.update_batch_size, self.update_repeat, self.update_times = update_batch_size, update_repeat, update_times
        self.warmup_epochs = warmup_epochs

    def setup(self, search: Search) -> None:
        from nni.nas.strategy._rl_impl import TuningTrajectoryGenerator
        from tianshou.data import ReplayBuffer

        super().setup(search)
        self.generator = TuningTrajectoryGenerator(search.model, self._policy)
        self.policy = self.generator.policy
        self._buffer = ReplayBuffer(self.generator.expected_trajectory_length * self.batches_per_update)
        self._trajectories = 0

    def _policy(self, env: Any) -> Any:
        """NNI's default policy (``_rl_impl.default_policy_fn``), deterministic in eval mode (greedy)."""
        from nni.nas.strategy._rl_impl import Actor, Critic, Preprocessor
        from tianshou.policy import PPOPolicy

        net = Preprocessor(env.observation_space, self.hidden_dim)
        actor, critic = Actor(env.action_space, net), Critic(net)
        optimizer = torch.optim.Adam(list(dict.fromkeys([*actor.parameters(), *critic.parameters()])),
                                     lr=self.controller_lr)
        return PPOPolicy(actor, critic, optimizer, torch.distributions.Categorical, discount_factor=1.0,
                         action_space=env.action_space, deterministic_eval=True)

    def _sample(self, greedy: bool) -> dict[str, Any]:
        self.policy.train(not greedy)
        with torch.no_grad():
            sample = self.generator.next_sample()
        self.search.supernet.resample(sample)
        return sample

    def step(self, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
        self._sample(greedy=False)
        return self.search.weight_step(x, y)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        if epoch <= self.warmup_epochs:
            return {}
        search, rewards = self.search, []
        for x, y in search.arch_loader:
            x, y = search.batch(x, y)
            self._sample(greedy=False)
            with torch.no_grad():  # training-mode BatchNorm: the path's own batch statistics, as NNI
                reward = (search.loss(x, y)[1].argmax(1) == y).float().mean().item()
            rewards.append(reward)
            self._buffer.update(self.generator.send_reward(reward))
            self._trajectories += 1
            if self._trajectories % self.batches_per_update == 0:
                self.policy.train()
                for _ in range(self.update_times):
                    self.policy.update(0, self._buffer, batch_size=self.update_batch_size, repeat=self.update_repeat)
        return {"reward": sum(rewards) / len(rewards)} if rewards else {}

    def state_dict(self) -> dict[str, Any]:
        """The controller (policy network and its Adam state), its replay buffer (trajectories waiting
        for the next policy update) and the trajectory count; the buffer as plain arrays, so reading it
        unpickles nothing."""
        return {"policy": self.policy.state_dict(), "policy_optimizer": self.policy.optim.state_dict(),
                "buffer": _plain(vars(self._buffer)), "trajectories": self._trajectories}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from tianshou.data import ReplayBuffer

        self.policy.load_state_dict(state["policy"])
        self.policy.optim.load_state_dict(state["policy_optimizer"])
        buffer = ReplayBuffer.__new__(ReplayBuffer)
        buffer.__setstate__(_unplain(state["buffer"]))  # what tianshou's own unpickling does
        if buffer.maxsize != self._buffer.maxsize:
            raise ValueError(f"the checkpoint's replay buffer holds {buffer.maxsize} steps, this search's "
                             f"{self._buffer.maxsize}: batches_per_update or the space differ")
        self._buffer, self._trajectories = buffer, int(state["trajectories"])

    def derive(self) -> dict[str, Any]:
        return self._sample(greedy=True)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        self.derive()
        yield


_BATCH, _ARRAY = "__tianshou_batch__", "__numpy_array__"


def _plain(value: Any) -> Any:
    """tianshou's replay-buffer state (Batches of numpy arrays) as dicts of tensors and plain data."""
    from tianshou.data import Batch

    if isinstance(value, Batch):
        return {_BATCH: {k: _plain(v) for k, v in value.items()}}
    if isinstance(value, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(value)).clone(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} of the ENAS replay buffer")


def _unplain(value: Any) -> Any:
    """The inverse of :func:`_plain`."""
    from tianshou.data import Batch

    if isinstance(value, dict) and _BATCH in value:
        batch = Batch()
        for k, v in value[_BATCH].items():
            batch[k] = _unplain(v)
        return batch
    if isinstance(value, dict) and _ARRAY in value:
        return value[_ARRAY].numpy().astype(np.dtype(value["dtype"]), copy=True)
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unplain(v) for v in value)
    return value


__all__ = ["ENAS"]
