"""DARTS (first and second order) and GumbelDARTS over op x rule spaces, on nni-bio's own loop.

Liu, Simonyan & Yang 2019, "DARTS: Differentiable Architecture Search", arXiv 1806.09055; Gumbel
variant as NNI's ``GumbelDARTS`` (SNAS, arXiv 1812.09926; FBNet, arXiv 1812.03443).

Why not NNI's ``DARTS`` strategy: NNI 3.0 supports first order only ("Second order (unrolled
2nd-order derivatives) is not supported yet", ``nni/nas/oneshot/pytorch/strategy.py``), runs only
inside a Lightning evaluator (no per-epoch NNI reporting, no control over which backward pass the
architecture gradient uses). The supernet is NNI's, converted by NNI's own mutation hooks
(:mod:`nni_bio.strategies.supernet`); the alternating loop is DARTS' ``train_search.py``: for each
weight batch, one architecture step (Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3) on a
batch of the architecture split, then one SGD step on the weights. The architecture parameters are
every logit of the supernet: the op logits alpha and, with ``edge_normalization`` (PC-DARTS), the
edge logits beta of the cell nodes, in the same Adam (as PC-DARTS' ``arch_parameters``).

**Second order** (``unrolled=True``, strategy ``darts2``) is DARTS' approximation
``grad_alpha L_val(w', alpha) - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)``
with ``w' = w - xi (momentum buffer + grad_w L_train + weight decay)``, ``w+- = w +- eps grad_w' L_val``,
``eps = 0.01 / ||grad_w' L_val||`` and ``xi`` the current weight learning rate. Every gradient is a
first-order ``autograd.grad`` through the rule layers (no double backward), taken over the trainable
parameters only (feedback tensors are buffers; a ``kp`` feedback matrix is a trainable Parameter and
is unrolled like a weight), so it runs on every rule. The weight gradients in it are the rules'
pseudo-gradients: the same ones the weight optimizer follows.

**Semantics over learning rules.** The mixture ``sum_k w_k op_k(x)`` back-propagates into its input
``sum_k w_k J_k^T g``, where ``J_k^T`` is candidate k's rule-specific backward (``W^T`` for
backprop, ``B^T`` for FA, ``(s sign W)^T`` for uSF, ...): the layer below learns from a *blend* of
feedback signals, never from one rule, and candidate k's weights train on upstream error ``w_k g``
(a DFA candidate sends the projected output error down unscaled, whatever ``w_k``). GumbelDARTS
blends the same way with noisy weights; with ``hard=True`` the forward weights are exactly one-hot
(straight-through), so the unchosen candidates receive zero upstream error and the layer below gets
the chosen candidate's feedback only, although every candidate is computed.

The architecture gradient ``dL/dalpha_k = sum_j (dw_j/dalpha_k) <g, op_j(x)>`` is only as exact as
``g``, which is back-propagated through the rule layers above the choice. ``arch_gradient="rule"``
(default) keeps the rules' backward passes there (as the reference BioNAS code did);
``arch_gradient="bp"`` computes the architecture step with every layer temporarily exact (``W^T``),
weights and rule state untouched, i.e. the gradient of the same network under backprop.
Architecture-step forwards never advance per-step feedback redraws (brSF keeps its draw).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from nni_bio.strategies.oneshot.search import OneShotStrategy, Search
from nni_bio.strategies.supernet import exact_feedback, plain_softmax, same_feedback_draw, set_gumbel

ARCH_GRADIENTS = ("rule", "bp")


class DARTS(OneShotStrategy):
    """Differentiable architecture search; ``unrolled=True`` for second order (see module docstring).

    Args:
        arch_lr: Adam learning rate of the architecture logits.
        arch_weight_decay: their weight decay.
        unrolled: second-order (unrolled) architecture gradient.
        arch_gradient: ``"rule"`` (through the candidates' learning rules) or ``"bp"`` (exact view).
        warmup_epochs: epochs of weight training before the first architecture step.
    """

    name = "darts"
    supernet_kind = "mixture"
    mixes_feedback = True

    def __init__(self, *, arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3, unrolled: bool = False,
                 arch_gradient: str = "rule", warmup_epochs: int = 0):
        if arch_gradient not in ARCH_GRADIENTS:
            raise ValueError(f"arch_gradient must be one of {ARCH_GRADIENTS}, not {arch_gradient!r}")
        self.arch_lr, self.arch_weight_decay = arch_lr, arch_weight_decay
        self.unrolled, self.arch_gradient, self.warmup_epochs = unrolled, arch_gradient, warmup_epochs
        self._arch_losses: list[float] = []

    def setup(self, search: Search) -> None:
        super().setup(search)
        self.arch_optimizer = torch.optim.Adam(search.supernet.arch_parameters(), lr=self.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=self.arch_weight_decay)

    def step(self, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
        if self.search.epoch > self.warmup_epochs:
            self._arch_losses.append(self.arch_step(x, y, *self.search.next_arch_batch()))
        return self.search.weight_step(x, y)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        losses, self._arch_losses = self._arch_losses, []
        return {"arch_loss": sum(losses) / len(losses)} if losses else {}

    def state_dict(self) -> dict[str, Any]:
        return {"arch_optimizer": self.arch_optimizer.state_dict()}  # the logits themselves are in the supernet's

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])

    # -- the architecture step ---------------------------------------------------------------------

    def arch_step(self, x_train: Tensor, y_train: Tensor, x_arch: Tensor, y_arch: Tensor) -> float:
        """One architecture step; returns the architecture-split loss before it."""
        search = self.search
        alphas = search.supernet.arch_parameters()
        view = exact_feedback(search.model) if self.arch_gradient == "bp" else contextlib.nullcontext()
        with view, same_feedback_draw(search.model):
            if self.unrolled:
                loss, grads = self._unrolled_gradient(x_train, y_train, x_arch, y_arch)
            else:
                loss_t, _ = search.loss(x_arch, y_arch)
                loss, grads = loss_t.item(), search.grads(loss_t, alphas)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        self.arch_optimizer.step()
        return loss

    def _unrolled_gradient(self, x_train: Tensor, y_train: Tensor, x_arch: Tensor,
                           y_arch: Tensor) -> tuple[float, list[Tensor]]:
        search = self.search
        alphas, weights = search.supernet.arch_parameters(), search.supernet.weights
        xi = search.lr
        backup = [w.detach().clone() for w in weights]
        try:
            # w' = w - xi * (momentum * buffer + grad + weight decay * w): one virtual SGD step
            loss_train, _ = search.loss(x_train, y_train)
            grads = search.grads(loss_train, weights)
            group = search.optimizer.param_groups[0]
            with torch.no_grad():
                for w, g in zip(weights, grads):
                    d = g + group["weight_decay"] * w
                    buffer = search.optimizer.state.get(w, {}).get("momentum_buffer")
                    if buffer is not None:
                        d = d + group["momentum"] * buffer
                    w.sub_(xi * d)
            loss_arch, _ = search.loss(x_arch, y_arch)
            both = search.grads(loss_arch, alphas + weights)
            d_alpha, d_weights = both[:len(alphas)], both[len(alphas):]
            _restore(weights, backup)
            # finite-difference Hessian-vector product (d^2 L_train / d alpha d w) . grad_w' L_val
            eps = 0.01 / torch.cat([g.flatten() for g in d_weights]).norm().clamp_min(1e-12).item()
            _shift(weights, d_weights, eps)
            grad_plus = search.grads(search.loss(x_train, y_train)[0], alphas)
            _shift(weights, d_weights, -2 * eps)
            grad_minus = search.grads(search.loss(x_train, y_train)[0], alphas)
        finally:
            _restore(weights, backup)
        hessian = [(p - m) / (2 * eps) for p, m in zip(grad_plus, grad_minus)]
        return loss_arch.item(), [g - xi * h for g, h in zip(d_alpha, hessian)]


class GumbelDARTS(DARTS):
    """DARTS with Gumbel-softmax weights, temperature annealed linearly from ``temperature[0]`` to
    ``temperature[1]`` over the epochs (NNI's ``GumbelDARTS`` defaults: 1.0 to 0.33).

    Args:
        temperature: (initial, final) temperature.
        hard: one-hot forward weights (straight-through): single-path forward and feedback.
        **kwargs: as :class:`DARTS`.
    """

    name = "gumbel"
    supernet_kind = "gumbel"

    def __init__(self, *, temperature: tuple[float, float] = (1.0, 0.33), hard: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        init, final = (float(t) for t in temperature)
        if not init >= final > 0:
            raise ValueError(f"temperature must be (initial, final) with initial >= final > 0, got {temperature!r}")
        self.temperature, self.hard = (init, final), hard
        self.mixes_feedback = not hard
        self.tau = init

    def epoch_start(self, epoch: int) -> None:
        init, final = self.temperature
        epochs = max(1, self.search.config.epochs)
        self.tau = (1 - (epoch - 1) / epochs) * (init - final) + final
        set_gumbel(self.search.model, tau=self.tau, hard=self.hard)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        return {**super().epoch_end(epoch), "temperature": self.tau}

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        with plain_softmax(self.search.model):
            yield


def _shift(params: list[torch.nn.Parameter], direction: list[Tensor], scale: float) -> None:
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d, alpha=scale)


def _restore(params: list[torch.nn.Parameter], values: list[Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


__all__ = ["ARCH_GRADIENTS", "DARTS", "GumbelDARTS"]
