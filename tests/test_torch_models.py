"""nni_bio.convert / nni_bio.to_torch over real timm and torchvision families, built offline (no weights):
the same outputs after conversion, the same gradients with backprop, a training step with every built-in rule
in which the classifier's weight gradient is still exact while the error sent back differs, and back again."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import nni_bio
from nni_bio.core.torch_models import NotConvertedWarning

timm = pytest.importorskip("timm")

#: small members of each family, at a 32x32 input (ViT/DeiT with 8x8 patches)
FAMILIES = {
    "resnet": lambda: timm.create_model("resnet10t", pretrained=False, num_classes=10),
    "mobilenetv3": lambda: timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10),
    "efficientnet": lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=10),
    "convnext": lambda: timm.create_model("convnext_atto", pretrained=False, num_classes=10),
    "regnet": lambda: timm.create_model("regnetx_002", pretrained=False, num_classes=10),
    "vit": lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                                     patch_size=8),
    "deit": lambda: timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                                      patch_size=8),
    "torchvision-resnet18": lambda: __import__("torchvision").models.resnet18(num_classes=10),
}
BIO_RULES = ["brsf", "dfa", "fa", "frsf", "kp", "usf"]


def build(family: str) -> nn.Module:
    torch.manual_seed(0)
    return FAMILIES[family]()


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.tensor([3, 7])


def layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear, nni_bio.RuleLayer)) for m in model.modules())


def classifier(model: nn.Module) -> str:
    """The name of the model's last weight layer (the one that receives the exact output error)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nni_bio.RuleLayer))][-1]


def gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    x = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, x.grad


@pytest.mark.parametrize("family", FAMILIES)
def test_conversion_keeps_outputs_names_and_backprop_gradients(family):
    original = build(family)
    converted = copy.deepcopy(original)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvertedWarning)  # every weight layer of these families converts
        nni_bio.convert(converted, "backprop")
    assert set(nni_bio.rule_map(converted).values()) == {"backprop"}
    assert layers(converted) == layers(original)
    assert [n for n, _ in converted.named_parameters()] == [n for n, _ in original.named_parameters()]
    x, y = batch()
    original.eval(), converted.eval()
    with torch.no_grad():
        assert torch.equal(converted(x), original(x))
    original.train(), converted.train()
    expected, expected_x = gradients(original, x, y)
    got, got_x = gradients(converted, x, y)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(got_x, expected_x, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["resnet", "mobilenetv3", "convnext", "vit", "torchvision-resnet18"])
@pytest.mark.parametrize("rule", BIO_RULES)
def test_every_rule_trains_and_changes_only_what_flows_back(family, rule):
    original = build(family)
    converted = nni_bio.convert(copy.deepcopy(original), rule)
    x, y = batch()
    expected, expected_x = gradients(original, x, y)
    got, got_x = gradients(converted, x, y)
    head = classifier(original) + ".weight"
    torch.testing.assert_close(got[head], expected[head], rtol=1e-4, atol=1e-6)  # its error is the exact one
    assert not torch.allclose(got_x, expected_x, rtol=1e-3, atol=1e-6)  # the error sent back follows the rule
    assert all(torch.isfinite(g).all() for g in got.values())
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.01)
    before = {n: p.detach().clone() for n, p in converted.named_parameters()}
    optimizer.step()
    assert any(not torch.equal(p, before[n]) for n, p in converted.named_parameters())


def test_to_torch_gives_back_the_torch_layers_with_the_same_weights():
    original = build("mobilenetv3")
    converted = nni_bio.convert(copy.deepcopy(original), "usf")
    weights = {n: p for n, p in converted.named_parameters()}
    back = nni_bio.to_torch(converted)
    assert not any(isinstance(m, nni_bio.RuleLayer) for m in back.modules())
    assert all(p is weights[n] for n, p in back.named_parameters())  # the same Parameter objects
    x, _ = batch()
    original.eval(), back.eval()
    with torch.no_grad():
        assert torch.equal(back(x), original(x))
    assert back.state_dict().keys() == original.state_dict().keys()


def test_per_layer_rules_by_pattern_include_and_exclude():
    net = build("resnet")
    nni_bio.convert(net, {"layer1.*": "fa", "fc": "dfa"}, exclude="layer1.0.conv2")
    rules = nni_bio.rule_map(net)
    assert rules["fc"] == "dfa" and rules["layer1.0.conv1"] == "fa" and "layer1.0.conv2" not in rules
    assert not any(name.startswith("layer2") for name in rules)  # no pattern matched: left as torch layers
    from nni_bio.core.error_bus import error_bus

    assert error_bus(net) is not None  # wired for its DFA layer
    only = nni_bio.convert(build("resnet"), "usf", include=["layer4.*"])
    assert all(name.startswith("layer4.") for name in nni_bio.rule_map(only))


def test_layers_it_cannot_convert_are_named_in_one_warning():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1d = nn.Conv1d(4, 4, 3)
            self.attention = nn.MultiheadAttention(8, 2)
            self.linear = nn.Linear(8, 8)

    net = Block()
    with pytest.warns(NotConvertedWarning) as caught:
        nni_bio.convert(net, "fa")
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "conv1d (Conv1d)" in text and "attention (MultiheadAttention)" in text and "out_proj" not in text
    assert nni_bio.rule_map(net) == {"linear": "fa"}


def test_padding_modes_and_same_padding_are_kept():
    for mode in ("zeros", "reflect", "replicate", "circular"):
        for padding in (1, "same", (2, 1)):
            torch.manual_seed(0)
            conv = nn.Conv2d(3, 4, 3, padding=padding, padding_mode=mode, dilation=2 if padding == "same" else 1)
            net = nn.Sequential(conv)
            x = torch.randn(2, 3, 9, 9, requires_grad=True)
            expected = conv(x)
            expected.sum().backward()
            expected_grad, x.grad = x.grad.clone(), None
            nni_bio.convert(net, "backprop")
            got = net(x)
            got.sum().backward()
            assert torch.equal(got, expected), (mode, padding)
            torch.testing.assert_close(x.grad, expected_grad, msg=f"{mode} {padding}")
            assert nni_bio.to_torch(net)[0].padding_mode == mode


def test_conversion_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a = nni_bio.convert(build("resnet"), "fa", seed=3)
    b = nni_bio.convert(build("resnet"), "fa", seed=3)
    torch.manual_seed(5)
    assert torch.equal(torch.random.get_rng_state(), state)
    fa = {n: t for n, t in a.state_dict().items() if "feedback" in n}
    assert fa and all(torch.equal(t, b.state_dict()[n]) for n, t in fa.items())


def test_a_rule_that_cannot_build_a_depthwise_layer_leaves_it_and_says_so():
    class NoGroups(nni_bio.LearningRule):
        info = nni_bio.RuleInfo(name="nogroups_test", family="feedback", summary="FA without groups",
                                api_version=nni_bio.PLUGIN_API_VERSION, supports_groups=False)

        def feedback(self, layer):
            return nni_bio.get_rule("fa").feedback(layer)

    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    with pytest.warns(NotConvertedWarning, match="0 \\(Conv2d: .*groups"):
        nni_bio.convert(net, NoGroups())
    assert isinstance(net[0], nn.Conv2d) and isinstance(net[1], nni_bio.RuleLayer)


def test_unknown_rule_names_fail_with_a_hint():
    with pytest.raises(nni_bio.UnknownRuleError, match="usf"):
        nni_bio.convert(nn.Linear(2, 2), {"*": "uSf2"})


def test_nni_bio_train_takes_a_timm_model_with_a_rule_and_attack_rebuilds_it(tmp_path):
    """`nni-bio train --model timm:NAME --rule R` on 28x28 grey images (no resizing: in_chans and, for a ViT,
    img_size follow the data set), a per-layer --rule-map, and `nni-bio attack` rebuilding it from its spec."""
    import json

    from nni_bio.cli import main

    out = tmp_path / "vit"
    assert main(["train", "--model", "timm:vit_tiny_patch16_224", "--model-args", '{"patch_size": 4, "depth": 2}',
                 "--rule", "usf", "--rule-map", '{"head": "dfa"}', "--dataset", "digits", "--epochs", "1",
                 "--train-limit", "64", "--batch-size", "32", "--output", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "complete"
    spec = json.loads((out / "spec.json").read_text())["model"]
    assert spec["model"] == "timm:vit_tiny_patch16_224" and spec["model_args"]["patch_size"] == 4
    assert main(["attack", str(out), "--attacks", "fgsm", "--eps", "0,0.1", "--num-images", "16",
                 "--output", str(tmp_path / "attack")]) == 0
    assert (tmp_path / "attack" / "attack.json").is_file()


def test_a_timm_model_name_with_a_typo_gets_a_hint():
    from nni_bio.core.errors import NniBioError
    from nni_bio.core.timm_models import build_timm

    with pytest.raises(NniBioError, match="did you mean .*resnet18"):
        build_timm("timm:resnet18x", in_channels=3, num_classes=10, image_size=32)
