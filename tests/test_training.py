"""The shared training loop."""

import pytest
import torch
from torch import nn

import nni_bio
from nni_bio.data import get_dataset
from nni_bio.training import DivergenceError, TrainConfig, train


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
