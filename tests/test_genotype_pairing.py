"""A seed pairs networks across arms: a genotype's initial forward weights depend on the seed and its ops only,
not on the rules of its layers or on the space (one rule or six) it was sampled from."""

from __future__ import annotations

import torch

from nni_bio.search_spaces import space_json
from nni_bio.search_spaces import space_arguments, space_class


def forward_weights(space: str, space_args: dict, sample: dict, seed: int = 3) -> dict[str, torch.Tensor]:
    cls = space_class(space)
    genotype = cls.export_genotype(sample, space_arguments(cls, space_args, "digits"))
    torch.manual_seed(seed)
    network = cls.build_network(genotype)
    after = torch.rand(())  # the global stream moved by the same amount whatever the space
    weights = {k: v for k, v in network.state_dict().items() if torch.is_tensor(v) and "feedback" not in k}
    return {**weights, "next global draw": after}


def test_rule_per_layer_networks_start_alike_whatever_their_rules_and_space():
    six = {"depth": 8, "width": 4, "rules": ["brsf", "dfa", "fa", "frsf", "kp", "usf"]}
    slots = space_json("rule_per_layer", "digits", six, "choice")
    mixed = {label: choice["_value"][i % len(choice["_value"])] for i, (label, choice) in enumerate(slots.items())}
    all_fa = {label: "fa" for label in slots}
    one = {"depth": 8, "width": 4, "rules": ["kp"]}
    all_kp = {label: "kp" for label in space_json("rule_per_layer", "digits", one, "choice")}
    reference = forward_weights("rule_per_layer", six, mixed)
    for space_args, sample in ((six, all_fa), (one, all_kp)):
        other = forward_weights("rule_per_layer", space_args, sample)
        assert other.keys() == reference.keys()
        assert all(torch.equal(other[k], reference[k]) for k in reference), sample
    assert not torch.equal(forward_weights("rule_per_layer", six, mixed, seed=4)["fc.weight"], reference["fc.weight"])


def test_op_x_rule_networks_with_the_same_ops_start_alike():
    a = forward_weights("tiny", {"width": 4, "rules": ["usf"]},
                        {"conv1": "conv_3x3", "conv2": "sep_conv_3x3@usf", "fc": "usf"})
    b = forward_weights("tiny", {"width": 4, "rules": ["dfa", "fa", "kp", "usf"]},
                        {"conv1": "conv_3x3", "conv2": "sep_conv_3x3@kp", "fc": "fa"})
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
