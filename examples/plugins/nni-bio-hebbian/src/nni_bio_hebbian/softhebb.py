"""SoftHebb: soft winner-take-all Hebbian learning, delivered to the optimizer as a pseudo-gradient.

Journé, Garcia Rodriguez, Guo & Moraitis 2023, "Hebbian deep learning without feedback", ICLR 2023,
arXiv 2209.11883; Moraitis et al. 2022, arXiv 2107.05747.

For a layer with weight rows w_k, every sample n (a row of a linear input, or an output position of
a convolution with its input patch x_n) gives

    u_nk = w_k . x_n                     pre-activation, without the bias
    y_nk = softmax_k(u_nk / tau)         soft competition between the output units
    dW   = (Y^T X - diag(sum_n y_nk u_nk) W) / N     Oja-like: each row drifts towards unit norm

and the backward pass returns grad_W = -dW, so ``optimizer.step()`` applies W <- W + lr * dW. The
update travels through ``.grad``: learning rate, schedule, momentum, weight decay, gradient clipping,
and DDP all-reduce apply to it like to any gradient (put the layer in its own parameter group to give
it another learning rate or no weight decay). Under fp16 with a GradScaler the update is multiplied by
the loss scale that :func:`nni_bio.train.training.scaled_backward` declares, so ``unscale_`` gives it back
intact; an fp16 backward without that declaration raises. The error arriving at the layer is not
used for the weight; it is still sent down exactly (W^T delta), so layers below keep learning. The
bias gets its ordinary gradient sum(delta): it is not part of the Hebbian pre-activation, and a
task-trained threshold helps the readout. SoftHebb's homeostatic bias, max|dW| normalisation and
radius-driven adaptive learning rate are left out: the optimizer sets the step size.

Nothing changes in eval or ``no_grad`` forwards: the update only exists when a backward pass
reaches the layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nni_bio.core.errors import NniBioError
from nni_bio.core.layers import LayerOp, RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo
from nni_bio.train.training import loss_scale

__all__ = ["SoftHebb", "SoftHebbFeedback"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The Hebbian statistics are accumulated in at least fp32 (bf16/fp16 under autocast)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def softhebb_delta(op: LayerOp, x: Tensor, weight: Tensor, tau: Tensor | float) -> Tensor:
    """The SoftHebb update dW for input ``x`` (linear: rows; conv2d: every output position).

    Returns a tensor of ``weight``'s shape and the compute dtype, averaged over the N samples.
    """
    dtype = _compute_dtype(x.dtype)
    x, weight = x.to(dtype), weight.to(dtype)
    u = op.forward(x, weight, None)              # (..., K) for linear, ([B,] K, H', W') for conv2d
    unit_dim = u.dim() - 1 if op.kind == "linear" else u.dim() - 3
    y = torch.softmax(u / tau, dim=unit_dim)
    # Y^T X: the weight gradient of the layer with y in place of the output error, i.e. the sum over
    # samples of y_nk x_n (for conv2d the unfolded input patches, at the layer's stride/padding/dilation).
    _, yx, _ = op.grads(y, x, weight, (False, True, False))
    yu = (y * u).sum(dim=[d for d in range(u.dim()) if d != unit_dim])  # (K,): sum_n y_nk u_nk
    n = u.numel() // u.shape[unit_dim]
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return (yx - yu.view(shape) * weight) / n


def _loss_scale(grad_out: Tensor) -> Tensor | float | None:
    """The loss scale every true gradient in this backward carries (GradScaler), or None for 1.

    Unlike a true gradient, the update does not depend on the loss, so it would not carry the scale
    and ``GradScaler.unscale_`` would divide it by 2**16. The scale is declared by
    :func:`nni_bio.train.training.scaled_backward` (``nni-bio train`` declares it); an fp16 backward with
    nothing declared is refused rather than silently learning 65536 times too slowly.
    """
    scale = loss_scale(grad_out.device)
    if scale is None and grad_out.dtype == torch.float16:
        raise NniBioError(
            "softhebb: fp16 backward without a declared loss scale. A GradScaler would divide the Hebbian update "
            "(which does not depend on the loss) by its scale and the layer would stop learning. Run the backward "
            "inside `with nni_bio.train.training.scaled_backward(scaler): scaler.scale(loss).backward()` (pass None if "
            "the loss is not scaled), or train in bf16 or fp32."
        )
    return scale


class SoftHebbFeedback(Feedback):
    """Buffer ``tau`` (softmax temperature, per layer); the backward returns grad_W = -dW."""

    def __init__(self, tau: float):
        super().__init__()
        self.register_buffer("tau", torch.tensor(float(tau)))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return weight.detach()  # W itself: the error goes down exactly, and dW needs W

    def backward(self, op: LayerOp, grad_out: Tensor, x: Tensor, feedback: Tensor, output: Tensor | None,
                 needs: tuple[bool, bool, bool]):
        gx, _, gb = op.grads(grad_out, x, feedback, (needs[0], False, needs[2]))
        gw = None
        if needs[1]:
            gw = softhebb_delta(op, x, feedback, self.tau).neg_()
            scale = _loss_scale(grad_out)
            if isinstance(scale, Tensor):
                gw = gw * scale
            gw = gw.to(grad_out.dtype)
        return gx, gw, gb

    def extra_repr(self) -> str:
        return f"tau={float(self.tau):.4g}"


class SoftHebb(LearningRule):
    """The ``softhebb`` rule. ``tau`` is the softmax temperature of new layers.

    tau = 1 suits inputs of roughly unit scale per feature and weight rows near unit norm (where the
    rule drives them); a smaller tau sharpens the competition towards hard winner-take-all. Change it
    per layer with ``layer.feedback.tau.fill_(0.5)`` (it is saved in the state dict), or for new
    layers with ``SoftHebb(tau=0.5).linear(...)`` or a subclass.

    Example:
        >>> import nni_bio, torch
        >>> layer = nni_bio.get_rule("softhebb").linear(64, 16)
        >>> layer(torch.rand(8, 64)).sum().backward()   # layer.weight.grad now holds -dW
    """

    info = RuleInfo(
        name="softhebb",
        family="local",
        summary="SoftHebb: soft winner-take-all Hebbian update (softmax(u/tau), Oja-like) as a pseudo-gradient",
        paper="Journé et al., ICLR 2023, arXiv 2209.11883",
        api_version=1,
        supports_groups=False,
    )
    tau: float = 1.0

    def __init__(self, tau: float | None = None):
        if tau is not None:
            self.tau = float(tau)
        if not self.tau > 0:
            raise ValueError(f"softhebb: tau must be positive, got {self.tau!r}")

    def feedback(self, layer: RuleLayer) -> Feedback:
        return SoftHebbFeedback(self.tau)
