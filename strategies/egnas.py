"""EG-NAS over op x rule spaces: CMA-ES explores the architecture logits, gradients train the weights.

Cai et al. 2024, "EG-NAS: Neural Architecture Search with Fast Evolutionary Exploration" (AAAI),
reference code ``caicaicheng/EG-NAS`` ``train_search.py``. Each epoch after ``warmup_epochs``:

1. CMA-ES (package ``cmaes``, class ``CMA``) is started at the current flattened architecture logits
   alpha (all choices of the supernet, in :meth:`Supernet.alpha_vector` order; with
   ``edge_normalization`` the edge logits beta of the cell nodes too) with step size
   ``sigma = max(1 / epoch, sigma_min)`` (epoch counted from 1, i.e. EG-NAS' ``1/(epoch+1)`` with
   0-based epochs) and runs ``generations`` ask/tell rounds of ``population_size`` samples.
2. The fitness of a sample is the supernet's cross-entropy on one batch of the architecture split
   with the sample as logits (a forward pass in eval mode, no gradient). With ``similarity_weight``
   > 0 it is EG-NAS' compound fitness: plus ``similarity_weight`` times the mean cosine similarity
   (mapped to [0, 1]) between the sample and the current alpha, choice by choice, when the sample is
   at least as accurate as the current alpha on the batch (pushing exploration away), minus it
   otherwise.
3. alpha moves toward the best sample seen: ``alpha += step_size * (best - alpha)``.

Then the weights train for an epoch through the softmax(alpha) mixture (SGD, as DARTS). The
derived architecture is the argmax per label (DARTS' rule inside cells), as for DARTS.

Differences to the reference, on purpose: no partial-channel supernet unless asked for
(``partial_channels=4`` as EG-NAS; ``edge_normalization`` for PC-DARTS' edge weights); CMA-ES
works on the logits themselves (EG-NAS normalises "projected weights" and adds
``step_size * softmax(best)`` to alpha); one CMA-ES run of ``generations`` rounds instead of
``samples`` independent one-generation runs; the fitness defaults to the plain validation loss.
Reference defaults: population 50, 3 rounds, sigma_min 0.02, step size 0.1, 15 warm-up epochs of
50 (here: 30 % of the epochs unless ``warmup_epochs`` is given).

**Checkpoints.** No CMA-ES state crosses an epoch: each epoch's CMA-ES run starts at the current
alpha with ``sigma`` from the epoch and its own seed ``seed * 100003 + epoch``, and ends inside that
epoch's :meth:`~EGNAS.epoch_start`. An epoch checkpoint (alpha in the supernet, the epoch, the random
states) therefore rebuilds every later run exactly, and no ``cmaes.CMA`` object is ever pickled.

**Semantics over learning rules.** The weight steps use the softmax(alpha) mixture, so, as in
DARTS, the layer below receives a blend of the candidates' feedback signals. The architecture
update uses forward passes only: no architecture gradient, so no backward pass (bio or exact) is
involved in choosing alpha.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nni_bio.core.error_bus import main_output
from nni_bio.strategies.oneshot.search import OneShotStrategy, Search, frozen


class EGNAS(OneShotStrategy):
    """Evolution-guided one-shot search (see module docstring).

    Args:
        population_size: CMA-ES population per round (EG-NAS: 50).
        generations: ask/tell rounds per architecture update (EG-NAS: 3 samples).
        sigma_min: floor of the CMA-ES step size (EG-NAS: 0.02).
        step_size: how far alpha moves toward the best sample (EG-NAS: 0.1).
        similarity_weight: weight of EG-NAS' similarity term in the fitness (EG-NAS: 0.4; 0 = plain loss).
        warmup_epochs: epochs before the first architecture update (default: 30 % of the epochs).
    """

    name = "egnas"
    supernet_kind = "mixture"
    mixes_feedback = True

    def __init__(self, *, population_size: int = 50, generations: int = 3, sigma_min: float = 0.02,
                 step_size: float = 0.1, similarity_weight: float = 0.0, warmup_epochs: int | None = None):
        if population_size < 2 or generations < 1:
            raise ValueError("EG-NAS needs population_size >= 2 and generations >= 1")
        if not 0 < step_size <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {step_size}")
        self.population_size, self.generations = population_size, generations
        self.sigma_min, self.step_size, self.similarity_weight = sigma_min, step_size, similarity_weight
        self.warmup_epochs = warmup_epochs
        self._last: dict[str, float] = {}

    def setup(self, search: Search) -> None:
        super().setup(search)
        if self.warmup_epochs is None:
            self.warmup_epochs = int(round(0.3 * search.config.epochs))
        for alpha in search.supernet.arch_parameters():  # alpha is never trained by gradient here
            alpha.requires_grad_(False)

    def epoch_start(self, epoch: int) -> None:
        self._last = {}
        if epoch > self.warmup_epochs:
            self._last = self.update_alpha(epoch)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        return dict(self._last)

    def update_alpha(self, epoch: int) -> dict[str, float]:
        """One CMA-ES exploration and the alpha step; returns what it measured."""
        from cmaes import CMA

        search, supernet = self.search, self.search.supernet
        x, y = search.next_arch_batch()
        mean = supernet.alpha_vector()
        sizes = [p.numel() for p in supernet.arch_parameters()]
        sigma = max(1.0 / epoch, self.sigma_min)
        cma = CMA(mean=mean.double().numpy(), sigma=sigma, population_size=self.population_size,
                  seed=search.config.seed * 100_003 + epoch)
        search.model.eval()
        try:
            with torch.no_grad(), frozen(supernet.arch_parameters()):
                current_loss, current_acc = self._evaluate(x, y)
                best, best_fitness = mean, math.inf
                for _ in range(self.generations):
                    told = []
                    for _ in range(cma.population_size):
                        candidate = cma.ask()
                        fitness = self._fitness(torch.as_tensor(candidate, dtype=torch.float32), mean, sizes,
                                                x, y, current_acc)
                        told.append((candidate, fitness))
                        if fitness < best_fitness:
                            best, best_fitness = torch.as_tensor(candidate, dtype=torch.float32), fitness
                    cma.tell(told)
        finally:
            search.model.train()
        supernet.set_alpha_vector(mean + self.step_size * (best - mean))
        return {"sigma": sigma, "best_fitness": best_fitness, "current_arch_loss": current_loss,
                "alpha_shift": float((best - mean).norm() * self.step_size)}

    def _evaluate(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        with self.search.autocast():
            logits = main_output(self.search.model(x))
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()

    def _fitness(self, candidate: Tensor, current: Tensor, sizes: list[int], x: Tensor, y: Tensor,
                 current_acc: float) -> float:
        self.search.supernet.set_alpha_vector(candidate)
        loss, acc = self._evaluate(x, y)
        if self.similarity_weight:
            sims = [F.cosine_similarity(c, a, dim=0).item() for c, a in
                    zip(candidate.split(sizes), current.split(sizes))]
            similarity = (float(np.mean(sims)) + 1) / 2
            loss += self.similarity_weight * similarity * (1 if acc >= current_acc else -1)
        return loss


__all__ = ["EGNAS"]
