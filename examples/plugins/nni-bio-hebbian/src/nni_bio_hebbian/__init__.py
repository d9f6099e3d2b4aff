"""nni-bio-hebbian: an example third-party nni-bio plugin providing the ``softhebb`` learning rule.

The rule is registered through the ``nni_bio.rules`` entry point in ``pyproject.toml``; use it by
name, like a built-in: ``nni_bio.get_rule("softhebb").linear(64, 128)``.
"""

from __future__ import annotations

from nni_bio_hebbian.softhebb import SoftHebb as SoftHebb
from nni_bio_hebbian.softhebb import SoftHebbFeedback as SoftHebbFeedback

__all__ = ["SoftHebb", "SoftHebbFeedback"]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        return version("nni-bio-hebbian")
    raise AttributeError(f"module 'nni_bio_hebbian' has no attribute {name!r}")
