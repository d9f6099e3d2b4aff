"""The old place of :mod:`nni_bio.core.rule`, kept for plugins written against nni-bio 0.1: importing it warns
(``FutureWarning``) and gives the very same objects. It goes in the next release."""

from nni_bio.core._moved import forward

__getattr__, __dir__ = forward("nni_bio.rule", "nni_bio.core.rule")
