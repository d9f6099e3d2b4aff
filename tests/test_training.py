"""The shared training loop."""

import pytest
import torch
from torch import nn

import nni_bio
from nni_bio.data import get_dataset
from nni_bio.train.training import DivergenceError, TrainConfig, train


def mixed_cnn():
    r = nni_bio.get_rule
    return nn.Sequential(r("usf").conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), r("frsf").linear(16 * 16, 10))


def test_mixed_rule_cnn_learns_digits():
    result = train(mixed_cnn(), get_dataset("digits", "train"), get_dataset("digits", "val"), TrainConfig(epochs=4))
    assert result.final.val_acc > 0.9
    assert [m.epoch for m in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_dfa_network_is_wired_automatically():
    net = nn.Sequential(nn.Flatten(), nni_bio.get_rule("dfa").linear(64, 32), nn.ReLU(), nni_bio.get_rule("backprop").linear(32, 10))
    result = train(net, get_dataset("digits", "train"), get_dataset("digits", "val"), TrainConfig(epochs=3))
    assert result.final.val_acc > 0.7


def test_divergence_fails_loudly_with_advice():
    with pytest.raises(DivergenceError, match="Lower the learning rate"):
        train(mixed_cnn(), get_dataset("digits", "train"), get_dataset("digits", "val"),
              TrainConfig(epochs=2, lr=1e30, grad_clip=0))


def test_auxiliary_output_is_added_to_the_loss():
    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mixed_cnn()

        def forward(self, x):
            logits = self.body(x)
            return (logits, torch.zeros_like(logits) + 1e6 * self.training) if self.training else logits

    with pytest.raises(DivergenceError):  # an aux loss weighted 0.4 of a huge loss is not finite... or huge
        train(WithAux(), get_dataset("digits", "train"), get_dataset("digits", "val"),
              TrainConfig(epochs=1, auxiliary_weight=float("inf")))


# --- Kolen-Pollack: weight decay and gradient clipping -------------------------------------------

def _kp_net():
    return nn.Sequential(nn.Flatten(), nni_bio.get_rule("kp").linear(64, 10))


def test_kp_without_weight_decay_warns():
    from nni_bio.train.training import make_optimizer

    with pytest.warns(UserWarning, match="without weight decay"):
        make_optimizer(_kp_net(), TrainConfig(weight_decay=0.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_optimizer(_kp_net(), TrainConfig(weight_decay=3e-4))
        make_optimizer(mixed_cnn(), TrainConfig(weight_decay=0.0))  # no learned feedback: nothing to warn about


def test_clipping_counts_w_gradient_once_for_kp_layers():
    """A one-layer KP net has the exact weight gradient: clipped, it must move like backprop's."""
    torch.manual_seed(0)
    bp, kp = nni_bio.get_rule("backprop").linear(64, 10), nni_bio.get_rule("kp").linear(64, 10)
    with torch.no_grad():
        kp.weight.copy_(bp.weight)
        kp.bias.copy_(bp.bias)
    data = torch.utils.data.Subset(get_dataset("digits", "train", augment=False), range(128))
    config = TrainConfig(epochs=1, batch_size=32, momentum=0.0, weight_decay=3e-4, grad_clip=0.05)
    for layer in (bp, kp):
        train(nn.Sequential(nn.Flatten(), layer), data, data, config)
    # Before: clip_grad_norm_ over W, b and B counted W's gradient twice and shrank every step more.
    torch.testing.assert_close(kp.weight, bp.weight)
    torch.testing.assert_close(kp.bias, bp.bias)


def test_clipped_kp_feedback_keeps_w_update_so_b_minus_w_contracts():
    from nni_bio.train.training import clip_grad_norm, make_optimizer

    torch.manual_seed(0)
    net = _kp_net()
    layer = net[1]
    config = TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.01)
    optimizer = make_optimizer(net, config)
    gap = layer.feedback.matrix.detach() - layer.weight.detach()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        grads = [layer.weight.grad, layer.bias.grad]
        before = torch.cat([g.flatten() for g in grads]).norm().item()
        assert clip_grad_norm(net, 0.01).item() == pytest.approx(before, rel=1e-5)  # B's copy not counted
        assert torch.cat([g.flatten() for g in grads]).norm().item() == pytest.approx(0.01, rel=1e-4)
        assert torch.equal(layer.feedback.matrix.grad, layer.weight.grad)  # clipped by the same factor
        optimizer.step()
        gap = gap * (1 - config.lr * config.weight_decay)
    torch.testing.assert_close(layer.feedback.matrix.detach() - layer.weight.detach(), gap)


def test_clipping_a_parameter_subset_counts_kps_mirrored_gradient_once():
    """The one-shot loop clips only the supernet's weights: KP's B must still be counted once."""
    import nni_bio
    from nni_bio.train.training import clip_grad_norm

    model = torch.nn.Sequential(nni_bio.get_rule("kp").linear(4, 3))
    model(torch.randn(5, 4)).square().sum().backward()
    layer = model[0]
    exact = torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()]).norm()
    norm = clip_grad_norm(model, 1e9, parameters=list(model.parameters()))
    torch.testing.assert_close(norm, exact)
    clip_grad_norm(model, float(exact) / 2, parameters=list(model.parameters()))
    torch.testing.assert_close(layer.feedback.matrix.grad, layer.weight.grad)
