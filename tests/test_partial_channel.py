"""GPU options of the one-shot search (issue 11 item 5): PC-DARTS partial-channel edges, AMP and
channels-last, all runnable (and checked) on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nni_bio.core.error_bus import main_output
from nni_bio.core.layers import RuleConv2d
from nni_bio.search_spaces.darts import DartsSpace
from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.strategies.oneshot import make_strategy, run_oneshot
from nni_bio.strategies.oneshot.loop import _run_settings
from nni_bio.strategies.supernet import PartialChannelMixedCell, build_supernet, channel_shuffle

SMALL = {"width": 8, "num_cells": 3, "rules": ["usf", "fa"]}


def darts_space() -> DartsSpace:
    return DartsSpace(in_channels=1, num_classes=10, **SMALL)


def test_channel_shuffle_interleaves_the_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 3, 3)
    assert torch.equal(channel_shuffle(x, 1), x)
    assert channel_shuffle(x, 2)[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3)[0, :, 0, 0].tolist() == [0, 2, 4, 1, 3, 5]


def test_partial_channel_cells_are_narrower_and_train() -> None:
    torch.manual_seed(0)
    full = build_supernet(darts_space(), "mixture")
    torch.manual_seed(0)
    partial = build_supernet(darts_space(), "mixture", partial_channels=4)
    cells = [m for m in partial.model.modules() if isinstance(m, PartialChannelMixedCell)]
    assert len(cells) == 3 and all(c.partial_channels == 4 for c in cells)
    assert sum(p.numel() for p in partial.weights) < sum(p.numel() for p in full.weights) / 2
    first_edge = cells[0].ops[0][0]
    conv = next(m for m in first_edge["sep_conv_3x3@usf"].modules() if isinstance(m, RuleConv2d))
    assert conv.in_channels == 8 // 4  # the op sees 1/k of the edge's 8 channels
    x = torch.randn(2, 1, 8, 8)
    out = partial.model(x)
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in partial.arch_parameters())


def test_partial_channel_forward_with_k_1_is_nnis_cell() -> None:
    supernet = build_supernet(darts_space(), "mixture")
    x = torch.randn(2, 1, 8, 8)
    supernet.model.eval()
    expected = supernet.model(x)
    for m in supernet.model.modules():
        if type(m).__name__ == "DifferentiableMixedCell":
            m.__class__, m.partial_channels = PartialChannelMixedCell, 1
    torch.testing.assert_close(supernet.model(x), expected)


def test_partial_channels_refuse_what_they_cannot_do() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        build_supernet(darts_space(), "mixture", partial_channels=3)
    with pytest.raises(ValueError, match="mixture or gumbel"):
        build_supernet(darts_space(), "path", partial_channels=2)
    with pytest.raises(ValueError, match="no Cell"):
        build_supernet(TinySpace(), "mixture", partial_channels=2)


@pytest.mark.parametrize("strategy", ["darts", "egnas", "gumbel"])
def test_a_search_with_partial_channels_derives_a_full_width_genotype(strategy: str) -> None:
    result = run_oneshot("darts", strategy, "digits", 1, space_args=SMALL, train_limit=64, batch_size=16,
                         partial_channels=2,
                         **({"warmup_epochs": 0, "population_size": 4, "generations": 1} if strategy == "egnas" else {}))
    assert result.config["partial_channels"] == 2
    net = DartsSpace.build_network(result.genotype, width=8, num_cells=3)
    assert main_output(net(torch.randn(2, 1, 8, 8))).shape == (2, 10)


@pytest.mark.parametrize("strategy, options", [
    ("darts", {"amp": "bf16", "channels_last": True}),
    ("darts", {"amp": "fp16"}),
    ("enas", {"amp": "bf16"}),
])
def test_amp_and_channels_last_searches_run(strategy: str, options: dict) -> None:
    result = run_oneshot("darts", strategy, "digits", 1, space_args=SMALL, train_limit=32, batch_size=16,
                         eval_derived=False, **({"warmup_epochs": 0} if strategy == "enas" else {}), **options)
    record = result.history[-1]
    assert torch.isfinite(torch.tensor([record.train_loss, record.val_loss])).all()
    assert all(result.config[k] == v for k, v in options.items())


def test_fp16_architecture_gradients_are_unscaled() -> None:
    from nni_bio.data import get_dataset
    from nni_bio.strategies.oneshot.search import OneShotConfig, Search

    data = torch.utils.data.Subset(get_dataset("digits", "train"), range(32))
    grads = {}
    for amp in ("none", "fp16"):
        torch.manual_seed(0)
        supernet = build_supernet(darts_space(), "mixture")
        search = Search(supernet, OneShotConfig(amp=amp, batch_size=16), data, data, data)
        x, y = search.next_arch_batch()
        grads[amp] = search.grads(search.loss(x, y)[0], supernet.arch_parameters())
        assert search.scaler.is_enabled() == (amp == "fp16")
    for a, b in zip(grads["none"], grads["fp16"]):  # fp16 forward: the same gradient up to rounding, not 65536x
        torch.testing.assert_close(b, a, rtol=0.1, atol=5e-3)
        assert 0.9 < float(b.norm() / a.norm()) < 1.1


def test_new_settings_at_their_defaults_keep_old_checkpoints_resumable() -> None:
    searcher, config = make_strategy("darts")
    settings = _run_settings("darts", "darts", "digits", None, config, searcher)
    assert not {"amp", "partial_channels", "channels_last"} & set(settings["config"])
    searcher, config = make_strategy("darts", amp="bf16", partial_channels=2, channels_last=True)
    settings = _run_settings("darts", "darts", "digits", None, config, searcher)
    assert settings["config"]["amp"] == "bf16" and settings["config"]["partial_channels"] == 2
    assert "channels_last" not in settings["config"]  # a memory layout, like the device: may change on resume
