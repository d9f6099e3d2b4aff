"""nni-bio: neural-architecture search over bio-inspired learning rules.

The public surface of the rule core (pure PyTorch; no NNI import):

    >>> import nni_bio, torch
    >>> "usf" in nni_bio.list_rules()
    True
    >>> conv = nni_bio.get_rule("usf").conv2d(3, 8, 3, padding=1)
    >>> conv(torch.randn(1, 3, 8, 8)).shape
    torch.Size([1, 8, 8, 8])
"""

from __future__ import annotations

from typing import Any

from nni_bio.core._registry import get_rule as get_rule
from nni_bio.core._registry import is_rule as is_rule
from nni_bio.core._registry import list_rules as list_rules
from nni_bio.core._registry import register_rule as register_rule
from nni_bio.core._registry import rule_sources as rule_sources
from nni_bio.core._registry import unregister_rule as unregister_rule
from nni_bio.core.error_bus import enable_dfa as enable_dfa
from nni_bio.core.errors import NniBioError as NniBioError
from nni_bio.core.errors import UnknownRuleError as UnknownRuleError
from nni_bio.core.layers import LayerOp as LayerOp
from nni_bio.core.layers import RuleConv2d as RuleConv2d
from nni_bio.core.layers import RuleLayer as RuleLayer
from nni_bio.core.layers import RuleLinear as RuleLinear
from nni_bio.core.rule import PLUGIN_API_VERSION as PLUGIN_API_VERSION
from nni_bio.core.rule import Feedback as Feedback
from nni_bio.core.rule import LearningRule as LearningRule
from nni_bio.core.rule import RuleInfo as RuleInfo
from nni_bio.core.rule import SignFeedback as SignFeedback
from nni_bio.core.rule import xavier_like as xavier_like
from nni_bio.core.rule import xavier_std as xavier_std
from nni_bio.core.swap import rule_map as rule_map
from nni_bio.core.swap import swap_rule as swap_rule
from nni_bio.core.torch_models import convert as convert
from nni_bio.core.torch_models import to_torch as to_torch

__all__ = [
    "PLUGIN_API_VERSION", "Feedback", "LayerOp", "LearningRule", "NniBioError", "RuleConv2d", "RuleInfo",
    "RuleLayer", "RuleLinear", "SignFeedback", "UnknownRuleError", "convert", "enable_dfa", "get_rule", "is_rule",
    "list_rules", "register_rule", "rule_map", "rule_sources", "swap_rule", "to_torch", "unregister_rule",
    "xavier_like", "xavier_std",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("nni-bio")
    raise AttributeError(f"module 'nni_bio' has no attribute {name!r}")
