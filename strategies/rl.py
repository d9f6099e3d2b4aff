"""Moved: the policy-gradient tuner is :mod:`nni_bio.strategies.policy_gradient` (``rl`` in
``run_multi_trial`` means NNI's PPO strategy, a different thing). This alias goes in a later release."""

import warnings

from nni_bio.strategies.policy_gradient import *  # noqa: F403
from nni_bio.strategies.policy_gradient import PolicyGradientTuner, __all__  # noqa: F401

warnings.warn("nni_bio.strategies.rl moved to nni_bio.strategies.policy_gradient "
              "(className: nni_bio.strategies.policy_gradient.PolicyGradientTuner)", FutureWarning, stacklevel=2)
