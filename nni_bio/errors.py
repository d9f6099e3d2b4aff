"""The old place of :mod:`nni_bio.core.errors`, kept for plugins written against nni-bio 0.1 (the example plugin
imported it): importing it warns (``FutureWarning``) and gives the very same objects. It goes in the next
release."""

from nni_bio.core._moved import forward

__getattr__, __dir__ = forward("nni_bio.errors", "nni_bio.core.errors")
