"""The timm_rules space: a rule choice per stage or block of any timm model, frozen into the network the
sample names, rebuilt from its genotype, and trained as an NNI trial."""

from __future__ import annotations

import json

import pytest
import torch

import nni_bio
from nni_bio.nas.mutables import freeze, search_space_json
from nni_bio.search_spaces import space_class
from nni_bio.search_spaces.timm_rules import TimmRulesSpace

pytest.importorskip("timm")
ARGS = {"model": "resnet10t", "in_channels": 1, "num_classes": 10, "image_size": 8, "rules": ["fa", "usf", "dfa"]}


def test_stages_and_blocks_get_one_choice_each_and_the_first_layer_only_what_can_change_it():
    space = TimmRulesSpace(**ARGS)
    choices = search_space_json(space)
    assert list(choices) == ["conv1", "fc", "layer1", "layer2", "layer3", "layer4"]
    assert choices["layer2"]["_value"] == ["dfa", "fa", "usf"]
    assert len(choices["conv1"]["_value"]) == 3  # resnet10t's stem holds 3 convs: its rule matters for 2 of them
    blocks = search_space_json(TimmRulesSpace(**ARGS, granularity="block"))
    assert "layer1_0" in blocks and "layer4_0" in blocks and "layer1" not in blocks
    vit = search_space_json(TimmRulesSpace("vit_tiny_patch16_224", in_channels=3, num_classes=10, image_size=32,
                                           rules=["fa", "usf"], model_args={"patch_size": 8, "depth": 2},
                                           granularity="block"))
    assert {"blocks_0", "blocks_1", "head"} <= set(vit)
    assert "patch_embed" not in vit  # the first weight layer alone: error-only rules give it the exact local gradient


def test_a_sample_freezes_into_the_network_it_names_and_its_genotype_rebuilds_it():
    sample = {"conv1": "fa", "layer1": "usf", "layer2": "dfa", "layer3": "fa", "layer4": "usf", "fc": "dfa"}
    space = TimmRulesSpace(**ARGS)
    sample["conv1"] = search_space_json(space)["conv1"]["_value"][0]
    net = freeze(space, sample)
    rules = nni_bio.rule_map(net)
    assert {rules[n] for n in rules if n.startswith("net.layer2.")} == {"dfa"}
    assert rules["net.fc"] == "dfa"
    genotype = TimmRulesSpace.export_genotype(sample, ARGS)
    torch.manual_seed(0)
    a = space_class("timm_rules").build_network(genotype)
    torch.manual_seed(0)
    b = space_class("timm_rules").build_network(json.loads(json.dumps(genotype)))
    x = torch.randn(2, 1, 8, 8)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


def test_a_trial_trains_a_timm_rules_sample(tmp_path):
    from nni_bio.trial import main

    space = TimmRulesSpace(**ARGS)
    sample = {label: spec["_value"][-1] for label, spec in search_space_json(space).items()}
    args = {k: v for k, v in ARGS.items() if k not in ("in_channels", "num_classes", "image_size")}
    assert main(["--space", "timm_rules", "--space-args", json.dumps(args), "--dataset", "digits", "--epochs", "1",
                 "--train-limit", "64", "--batch-size", "32", "--sample", json.dumps(sample),
                 "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "genotype.json").read_text())["space"] == "timm_rules"
