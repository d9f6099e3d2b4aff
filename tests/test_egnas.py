"""EG-NAS: CMA-ES moves the architecture logits, deterministically for a seed."""

import pytest
import torch

from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.strategies.oneshot import make_strategy, run_oneshot
from nni_bio.strategies.oneshot.search import Search
from nni_bio.strategies.supernet import build_supernet


def _egnas_after_one_update(seed: int, **kwargs):
    torch.manual_seed(seed)
    searcher, config = make_strategy("egnas", population_size=6, generations=2, epochs=2, batch_size=16,
                                     seed=seed, **kwargs)
    supernet = build_supernet(TinySpace(width=4, rules=["usf", "fa"]), searcher.supernet_kind)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 1, 8, 8, generator=generator),
                                          torch.randint(0, 10, (48,), generator=generator))
    search = Search(supernet, config, data, data, data)
    searcher.setup(search)
    before = supernet.alpha_vector()
    measured = searcher.update_alpha(epoch=1)
    return before, supernet.alpha_vector(), measured


def test_an_update_moves_alpha_toward_the_best_sample():
    before, after, measured = _egnas_after_one_update(0)
    assert not torch.allclose(before, after)
    assert measured["sigma"] == 1.0
    assert measured["alpha_shift"] == pytest.approx((after - before).norm().item(), rel=1e-4)


def test_updates_are_deterministic_given_a_seed():
    _, first, _ = _egnas_after_one_update(3)
    _, again, _ = _egnas_after_one_update(3)
    _, other, _ = _egnas_after_one_update(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_compound_fitness_runs():
    before, after, _ = _egnas_after_one_update(0, similarity_weight=0.4)
    assert not torch.allclose(before, after)


def test_alpha_is_not_trained_by_gradient_and_warmup_holds_it():
    common = dict(epochs=2, space_args={"width": 4, "rules": ["usf", "fa"]}, train_limit=96, batch_size=32,
                  population_size=4, generations=1)
    held = run_oneshot("tiny", "egnas", "digits", warmup_epochs=2, **common)
    assert all(not r.extra for r in held.history)  # no architecture update during warm-up
    moved = run_oneshot("tiny", "egnas", "digits", warmup_epochs=1, **common)
    assert moved.history[1].extra["sigma"] == 0.5 and held.probs != moved.probs
    again = run_oneshot("tiny", "egnas", "digits", warmup_epochs=1, **common)
    assert again.probs == moved.probs and again.sample == moved.sample
