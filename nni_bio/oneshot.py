"""Moved: the one-shot trial is ``python -m nni_bio.strategies.oneshot.trial`` (everything one-shot is in
the package ``nni_bio.strategies.oneshot``). ``python -m nni_bio.oneshot`` still runs it, with a warning;
this alias goes in a later release."""

import sys
import warnings

from nni_bio.strategies.oneshot.trial import *  # noqa: F403
from nni_bio.strategies.oneshot.trial import main, parse_args, run  # noqa: F401

_MOVED = ("nni_bio.oneshot moved to nni_bio.strategies.oneshot.trial: write trialCommand: python3 -m "
          "nni_bio.strategies.oneshot.trial ...")

if __name__ == "__main__":
    print(f"warning: {_MOVED}", file=sys.stderr, flush=True)
    sys.exit(main())
warnings.warn(_MOVED, FutureWarning, stacklevel=2)
