"""DARTS layer presets: ``bio`` (no backprop layer) and ``reference`` (the reference code's backprop layers)."""

import json

import pytest

from nni_bio.cli import main
from nni_bio.core.layers import RuleLayer
from nni_bio.evaluate.run_report import load_runs, training_table
from nni_bio.nas.ops import FactorizedReduce, bio_weight_split
from nni_bio.search_spaces.darts import DartsSpace
from nni_bio.search_spaces.darts_cells import PRESETS, GenotypeError, full_args, with_preset
from nni_bio.search_spaces.darts_net import BIODARTS, build_network
from nni_bio.train.model_spec import fixed_spec, genotype_spec, preset_of

TINY = dict(width=4, num_cells=3)


def _outside_cell_ops(net):
    return {n: m.rule_name for n, m in net.named_modules() if isinstance(m, RuleLayer) and ".ops." not in n}


def test_preset_resolution_and_contradictions():
    assert set(PRESETS) == {"bio", "reference"}
    assert (full_args({})["preset"], full_args({})["fixed_rule"]) == ("bio", "usf")
    assert (full_args({"fixed_rule": "fa"})["preset"], full_args({"fixed_rule": "backprop"})["preset"]) == \
        ("bio", "reference")  # genotypes written before presets existed keep their meaning
    assert full_args({"preset": "reference"})["fixed_rule"] == "backprop"
    assert full_args({"preset": "bio", "fixed_rule": "frsf"})["fixed_rule"] == "frsf"
    with pytest.raises(GenotypeError, match="preset 'reference' trains the stem"):
        full_args({"preset": "reference", "fixed_rule": "usf"})
    with pytest.raises(GenotypeError, match="preset 'bio' has no backprop layer"):
        full_args({"preset": "bio", "fixed_rule": "backprop"})
    with pytest.raises(GenotypeError, match="Did you mean 'reference'"):
        full_args({"preset": "referenc"})


def test_reference_preset_reproduces_the_reference_weight_split():
    # paper-digest §3.2, verified on the reference code: BIODARTS at C=36 / 20 cells has 1.447 M bio-rule
    # weights and 1.389 M plain-BP ones (stem, pre-processing, skip FactorizedReduce, classifier)
    reference = bio_weight_split(build_network(with_preset(BIODARTS, "reference")))
    assert (reference["bio"], reference["backprop"]) == (1_446_552, 1_388_926)
    bio = bio_weight_split(build_network(with_preset(BIODARTS, "bio")))
    assert bio["backprop"] == 0 and bio["total"] == reference["total"]


@pytest.mark.parametrize("network", ["cifar", "imagenet"])
def test_reference_layers_are_backprop_and_cell_ops_keep_their_rules(network):
    net = build_network(with_preset(BIODARTS, "reference"), auxiliary=True, network=network, **TINY)
    assert net.preset == "reference"
    assert set(_outside_cell_ops(net).values()) == {"backprop"}  # stem(s), pre-processing, classifier, aux head
    reduce_cell = net.cells[1]
    skip = reduce_cell.ops[1]  # BIODARTS' skip_connect@usf on a stride-2 edge: backprop, as in the reference
    assert isinstance(skip, FactorizedReduce) and {m.rule_name for m in skip.modules()
                                                   if isinstance(m, RuleLayer)} == {"backprop"}
    other_ops = {m.rule_name for i, op in enumerate(reduce_cell.ops) if i != 1 for m in op.modules()
                 if isinstance(m, RuleLayer)}
    assert other_ops == {"usf"}  # dil_conv_5x5@usf
    bio = build_network(BIODARTS, auxiliary=True, network=network, **TINY)
    assert bio.preset == "bio" and set(_outside_cell_ops(bio).values()) == {"usf"}
    assert {m.rule_name for m in bio.cells[1].ops[1].modules() if isinstance(m, RuleLayer)} == {"usf"}


def test_search_space_takes_the_preset():
    space = DartsSpace(rules=["usf"], preset="reference", reduce_skip_rules=True, **TINY)
    assert (space.space_args["preset"], space.space_args["fixed_rule"]) == ("reference", "backprop")
    assert space.stem[0].rule_name == "backprop" and space.classifier.rule_name == "backprop"
    assert DartsSpace(**TINY).space_args["preset"] == "bio"
    assert DartsSpace(fixed_rule="backprop", **TINY).space_args["preset"] == "reference"
    with pytest.raises(GenotypeError):
        DartsSpace(preset="bio", fixed_rule="backprop", **TINY)
    json.dumps(space.space_args)


def test_with_preset_and_preset_of():
    ref = with_preset(BIODARTS, "reference")
    assert ref["args"]["preset"] == "reference" and ref["normal"] == BIODARTS["normal"]
    assert with_preset(ref, "bio")["args"]["fixed_rule"] == "usf"  # backprop is replaced by the default bio rule
    frsf = with_preset({**BIODARTS, "args": {**BIODARTS["args"], "fixed_rule": "frsf"}}, "bio")
    assert frsf["args"]["fixed_rule"] == "frsf"
    assert preset_of(genotype_spec(ref)) == "reference" and preset_of(genotype_spec(BIODARTS)) == "bio"
    assert preset_of(fixed_spec("tiny-cnn")) is None
    with pytest.raises(GenotypeError, match="presets exist for the 'darts' space only"):
        with_preset({"space": "nb201", "args": {}, "sample": {}}, "reference")


def test_train_cli_preset_is_applied_recorded_and_reported(tmp_path, capsys):
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(BIODARTS))
    base = ["train", "--genotype", str(genotype), "--dataset", "digits", "--width", "4", "--cells", "3"]
    assert main([*base, "--preset", "reference", "--print-layers"]) == 0
    layers = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert layers["stem.0"] == layers["classifier"] == layers["cells.0.preprocess1.1"] == "backprop"
    assert layers["cells.0.ops.2.1"] == "frsf"
    runs = {}
    for preset in ("reference", "bio"):
        runs[preset] = tmp_path / preset
        assert main([*base, "--preset", preset, "--epochs", "1", "--train-limit", "64", "--no-progress",
                     "--diagnostics-every", "0", "--output", str(runs[preset])]) == 0
    result = json.loads((runs["reference"] / "result.json").read_text())
    assert result["preset"] == "reference" and result["model"]["genotype"]["args"]["preset"] == "reference"
    assert result["weights_per_rule"]["backprop"] > 0
    assert json.loads((runs["bio"] / "result.json").read_text())["weights_per_rule"].get("backprop", 0) == 0
    table = training_table(load_runs([runs["reference"], runs["bio"]]))
    assert "(preset reference)" in table and "(preset bio)" in table
    assert main(["train", "--model", "tiny-cnn", "--preset", "bio", "--no-progress"]) == 2
    assert "--preset apply to --genotype networks only" in capsys.readouterr().err
