"""Rule-aware DARTS / NAS-Bench-201 ops (nni_bio.nas.ops): every op x rule, both strides, tiny sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nni_bio
from nni_bio.core.errors import UnsupportedLayerError
from nni_bio.core.layers import RuleLayer
from nni_bio.nas.ops import (OPS, PARAMETER_FREE, DropPath, FactorizedReduce, MissingRuleError, ReLUConvBN,
                         ResNetBasicBlock, UnknownOpError, bio_weight_split, build_op, drop_path, has_weights,
                         supports)
from nni_bio.train.training import wire_rules

C = 4
RULES = nni_bio.list_rules()  # built-ins and any installed plugin


def _weighted_cases():
    for op in OPS:
        for stride in (1, 2):
            if has_weights(op, C, C, stride):
                yield op, stride


def _train_step(op: nn.Module, stride: int, c_out: int = C) -> None:
    """Forward and backward through ``op`` inside a small classifier; shapes and gradients checked."""
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    with torch.no_grad():
        assert op(x).shape == (2, c_out, 8 // stride, 8 // stride)
    net = wire_rules(nn.Sequential(op, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, 3)))
    loss = F.cross_entropy(net(x), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("op,stride", list(_weighted_cases()))
def test_op_with_weights_every_rule(op: str, stride: int, rule: str) -> None:
    if not supports(op, rule):  # e.g. a depthwise conv with a rule declaring supports_groups=False
        with pytest.raises(UnsupportedLayerError):
            build_op(f"{op}@{rule}", C, C, stride)
        return
    module = build_op(f"{op}@{rule}", C, C, stride)
    layers = [m for m in module.modules() if isinstance(m, RuleLayer)]
    assert layers and {m.rule_name for m in layers} == {rule}
    assert not [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    _train_step(module, stride)


@pytest.mark.parametrize("op,stride", [(op, s) for op in OPS for s in (1, 2) if not has_weights(op, C, C, s)])
def test_parameter_free_ops(op: str, stride: int) -> None:
    assert op in PARAMETER_FREE or (op, stride) == ("skip_connect", 1)
    module = build_op(op, C, C, stride, pool_bn=True)
    assert not list(module.parameters())
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    y = module(x)
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("size", [7, 8, 9])
@pytest.mark.parametrize("op", list(OPS))
def test_stride_two_shapes_agree_on_odd_sizes(op: str, size: int) -> None:
    """All ops of a reduction cell must give the same output size, also for odd inputs."""
    y = build_op(op, C, C, 2, rule="usf")(torch.randn(1, C, size, size))
    assert y.shape[-2:] == ((size + 1) // 2, (size + 1) // 2)


def test_skip_connect_stride_two_uses_the_rule() -> None:
    """Fix of the reference defect: the FactorizedReduce convs really are rule layers."""
    assert isinstance(build_op("skip_connect@fa", C, C, 1), nn.Identity)
    op = build_op("skip_connect@frsf", C, C, 2)
    assert isinstance(op, FactorizedReduce)
    assert [m.rule_name for m in op.modules() if isinstance(m, RuleLayer)] == ["frsf", "frsf"]
    assert build_op("skip_connect", C, C, 2, rule="brsf").conv_1.rule_name == "brsf"
    split = bio_weight_split(op)
    assert split["backprop"] == 0 and split["per_rule"] == {"frsf": 2 * (C // 2) * C}


def test_op_with_weights_needs_a_rule() -> None:
    with pytest.raises(MissingRuleError, match="needs a learning rule"):
        build_op("skip_connect", C, C, 2)
    with pytest.raises(MissingRuleError):
        build_op("sep_conv_3x3", C, C, 1)


def test_unknown_op_and_rule() -> None:
    with pytest.raises(UnknownOpError, match="sep_conv_3x3"):
        build_op("sep_conv_3x4@usf", C, C)
    with pytest.raises(nni_bio.UnknownRuleError):
        build_op("sep_conv_3x3@uSF", C, C)


def test_darts_op_structure() -> None:
    sep = build_op("sep_conv_5x5@usf", C, 6, 2, affine=False)
    convs = [m for m in sep if isinstance(m, RuleLayer)]
    assert [c.kernel_size for c in convs] == [(5, 5), (1, 1), (5, 5), (1, 1)]
    assert [c.groups for c in convs] == [C, 1, C, 1] and [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert all(not bn.affine for bn in sep if isinstance(bn, nn.BatchNorm2d))
    dil = build_op("dil_conv_5x5@fa", C, C, 1)
    assert dil[1].dilation == (2, 2) and dil[1].padding == (4, 4) and dil[1].groups == C
    nor = build_op("nor_conv_3x3@fa", C, C, 1)
    assert isinstance(nor, ReLUConvBN) and nor[1].kernel_size == (3, 3)


def test_pools() -> None:
    ones = torch.ones(1, 1, 4, 4)
    assert torch.allclose(build_op("avg_pool_3x3", 1, 1)(ones), ones)  # count_include_pad=False
    pooled = build_op("max_pool_3x3", C, C, pool_bn=True)
    assert isinstance(pooled[-1], nn.BatchNorm2d) and not pooled[-1].affine
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_op("max_pool_3x3", C, C))
    resample = build_op("avg_pool_3x3", C, 6, 1, rule="fa")  # channel change: a rule 1x1 conv first
    assert resample(torch.randn(1, C, 8, 8)).shape == (1, 6, 8, 8)
    assert {m.rule_name for m in resample.modules() if isinstance(m, RuleLayer)} == {"fa"}


def test_zero_op() -> None:
    x = torch.randn(2, C, 8, 8)
    assert torch.equal(build_op("none", C, C, 2)(x), torch.zeros(2, C, 4, 4))
    assert build_op("none", C, 6, 2)(x).shape == (2, 6, 4, 4)


@pytest.mark.parametrize("rule", ["usf", "dfa"])
@pytest.mark.parametrize("c_in,c_out,stride", [(C, 2 * C, 2), (C, 2 * C, 1), (C, C, 1)])
def test_resnet_basic_block(rule: str, c_in: int, c_out: int, stride: int) -> None:
    block = ResNetBasicBlock(c_in, c_out, stride, rule=rule)
    assert not [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert {m.rule_name for m in block.modules() if isinstance(m, RuleLayer)} == {rule}
    _train_step(block, stride, c_out)


def test_drop_path() -> None:
    x = torch.ones(64, 2, 3, 3)
    assert drop_path(x, 0.5, training=False) is x and drop_path(x, 0.0) is x
    y = drop_path(x, 0.5)
    per_sample = y.flatten(1).mean(1)
    assert set(per_sample.tolist()) <= {0.0, 2.0} and 0 < per_sample.sum() < 128
    module = DropPath(0.5).eval()
    assert module(x) is x
    module.train()
    module.drop_prob = 0.0
    assert module(x) is x


def test_supports() -> None:
    assert supports("sep_conv_3x3", "usf") and supports("none", "usf")
    with pytest.raises(UnknownOpError):
        supports("conv_9x9", "usf")


def test_bio_weight_split_counts_plain_layers_as_backprop() -> None:
    net = nn.Sequential(nni_bio.get_rule("usf").conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4),
                        nni_bio.get_rule("backprop").linear(4, 2), nn.Linear(2, 2))
    split = bio_weight_split(net)
    assert split["per_rule"] == {"backprop": 10 + 6, "usf": 108}
    assert (split["bio"], split["backprop"], split["other"], split["total"]) == (108, 16, 8, 132)
    assert split["plain_layers"] == ["3"]
    assert split["bio_fraction"] == pytest.approx(108 / 124)


def test_ops_module_does_not_import_nni() -> None:
    code = ("import sys, nni_bio.nas.ops, nni_bio.search_spaces.darts_net, nni_bio.search_spaces.nb201_net; "
            "bad = [m for m in sys.modules if m == 'nni' or m.startswith('nni.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
