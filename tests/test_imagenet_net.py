"""DARTS' ImageNet network (NetworkImageNet) from a genotype, its selection on ImageNet, and the recipe options."""

import json

import pytest
import torch
from torch import nn

from nni_bio.cli import main
from nni_bio.core.layers import RuleLayer
from nni_bio.data.fixtures import write_imagenet_folder
from nni_bio.nas.ops import FactorizedReduce, bio_weight_split
from nni_bio.search_spaces.darts_imagenet import AuxiliaryHeadImageNet, DartsImageNetNetwork
from nni_bio.search_spaces.darts_net import BIODARTS, DartsNetwork, build_network
from nni_bio.train.model_spec import build_model, genotype_spec
from nni_bio.train.training import TrainConfig, train


def quiet(_line):
    pass


def test_stems_cells_and_heads_follow_darts_network_imagenet():
    torch.manual_seed(0)
    net = build_network(BIODARTS, width=8, num_cells=3, auxiliary=True, network="imagenet", num_classes=7)
    assert isinstance(net, DartsImageNetNetwork) and isinstance(net.auxiliary_head, AuxiliaryHeadImageNet)
    # stem0: conv s2 (3 -> C/2), BN, ReLU, conv s2 (C/2 -> C), BN; stem1: ReLU, conv s2 (C -> C), BN
    convs0 = [m for m in net.stem0 if isinstance(m, RuleLayer)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs0] == [(3, 4, (2, 2)), (4, 8, (2, 2))]
    assert [type(m) for m in net.stem0] == [type(convs0[0]), nn.BatchNorm2d, nn.ReLU, type(convs0[1]), nn.BatchNorm2d]
    assert isinstance(net.stem1[0], nn.ReLU) and net.stem1[1].stride == (2, 2)
    assert isinstance(net.stem1[2], nn.BatchNorm2d)
    # the first cell reads stem0 (56x56) and stem1 (28x28): its c_{k-2} input is factorized-reduced
    assert isinstance(net.cells[0].preprocess0, FactorizedReduce)
    assert [c.reduction for c in net.cells] == [False, True, True]  # L//3 = 1, 2L//3 = 2
    sizes = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, i, o: sizes.append((tuple(i[0].shape[-2:]), tuple(o.shape[-2:]))))
    logits, aux = net.train()(torch.randn(2, 3, 224, 224))
    assert sizes == [((56, 56), (28, 28)), ((28, 28), (14, 14)), ((28, 28), (7, 7))]
    assert logits.shape == aux.shape == (2, 7)  # aux head on the 7x7 map: DARTS' 5x5/2 pool, conv 2x2 -> 1x1
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)  # other sizes: adaptive pools
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1]), label_smoothing=0.1)
    (loss + 0.4 * nn.functional.cross_entropy(aux, torch.tensor([0, 1]))).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_every_conv_uses_the_genotype_rules_or_the_fixed_rule():
    net = build_network(BIODARTS, width=8, num_cells=3, auxiliary=True, network="imagenet")
    split = bio_weight_split(net)
    assert split["plain_layers"] == [] and split["backprop"] == 0
    rules = {name: m.rule_name for name, m in net.named_modules() if isinstance(m, RuleLayer)}
    assert {r for n, r in rules.items() if n.startswith(("stem", "classifier", "auxiliary_head"))} == {"usf"}
    assert {r for n, r in rules.items() if ".ops." in n} == {"usf", "frsf"}  # BIODARTS' own rules
    fixed = build_network({**BIODARTS, "args": {**BIODARTS["args"], "fixed_rule": "fa"}}, width=8, num_cells=3,
                          auxiliary=True, network="imagenet")
    assert {m.rule_name for n, m in fixed.named_modules()
            if isinstance(m, RuleLayer) and n.startswith(("stem", "classifier", "auxiliary"))} == {"fa"}


def test_full_size_matches_the_reference_parameter_count():
    # paper-digest §5: BIODARTS at C=48, 14 cells, 1000 classes has 4.19 M trainable weights (aux head excluded)
    net = build_model(genotype_spec(BIODARTS), "imagenet")
    assert isinstance(net, DartsImageNetNetwork)
    assert (len(net.cells), net.cells[0].preprocess1[1].out_channels) == (14, 48)
    assert bio_weight_split(net)["total"] == 4_194_304


def test_dataset_imagenet_selects_the_imagenet_network():
    spec = genotype_spec(BIODARTS, width=4, cells=3, auxiliary=True)
    on_imagenet = build_model(spec, "imagenet")
    assert isinstance(on_imagenet, DartsImageNetNetwork) and on_imagenet.classifier.out_features == 1000
    assert isinstance(build_model(spec, "cifar10"), DartsNetwork)
    forced = {**spec, "options": {**spec["options"], "network": "cifar"}}
    assert isinstance(build_model(forced, "imagenet"), DartsNetwork)


def test_step_schedule_decays_the_learning_rate_once_per_epoch():
    from nni_bio.data import get_dataset

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, lr_schedule="step", lr_gamma=0.5)
    train_set = torch.utils.data.Subset(get_dataset("digits", "train"), range(256))
    result = train(net, train_set, get_dataset("digits", "val"), config)
    assert [m.lr for m in result.history] == pytest.approx([0.1, 0.05, 0.025])
    cosine = train(net, train_set, None, TrainConfig(epochs=2, batch_size=64, lr=0.1))
    assert cosine.history[1].lr == pytest.approx(0.05)  # half-way through the cosine
    with pytest.raises(Exception, match="unknown lr_schedule"):
        train(net, train_set, None, TrainConfig(epochs=1, lr_schedule="linear"))


def test_train_cli_runs_the_darts_imagenet_recipe_on_a_fake_imagenet(tmp_path, capsys):
    write_imagenet_folder(tmp_path / "data", classes=2, per_class=4, val_per_class=2, size=40)
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(BIODARTS))
    out = tmp_path / "run"
    argv = ["train", "--genotype", str(genotype), "--dataset", "imagenet", "--data-dir", str(tmp_path / "data"),
            "--width", "4", "--cells", "3", "--auxiliary", "--auxiliary-weight", "0.4", "--epochs", "2",
            "--batch-size", "4", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "3e-5", "--lr-schedule", "step",
            "--lr-gamma", "0.97", "--grad-clip", "5", "--drop-path", "0", "--no-progress", "--diagnostics-every", "0",
            "--output", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "complete" and result["final"]["test_images"] == 4
    config = result["setup"]["config"]
    assert (config["label_smoothing"], config["lr_schedule"], config["lr_gamma"], config["weight_decay"]) == \
        (0.1, "step", 0.97, 3e-5)
    assert [m["lr"] for m in result["history"]] == pytest.approx([0.1, 0.097])
    assert result["preset"] == "bio" and result["weights_per_rule"].get("backprop", 0) == 0
    assert main(argv[:-2] + ["--print-layers"]) == 0
    layers = capsys.readouterr().out
    assert "stem0.0" in layers and "stem1.1" in layers and "auxiliary_head.features.3" in layers
