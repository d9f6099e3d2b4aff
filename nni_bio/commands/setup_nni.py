"""``nni-bio setup-nni``: apply nni-bio's patches to NNI 3.0's installed manager (idempotent).

NNI 3.0 is archived upstream; two defects of its manager matter to nni-bio (``nni_bio.nas._compat``): on a remote
training service with ``trialConcurrency > 1`` a trial can receive another trial's parameters, and the manager
listens on every network interface. ``nni-bio search`` and ``nni-bio study`` apply the patches themselves
before they start NNI; run this once after ``pip install nni-bio`` when you start experiments with plain
``nnictl create``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("setup-nni", help="patch NNI's installed manager (run once after pip install)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say what is missing; exit 1 when anything is")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nni_bio.nas import _compat

    missing = _compat.manager_patches_missing()
    if args.check:
        print("NNI's manager has nni-bio's patches" if not missing else
              f"NNI's manager lacks: {'; '.join(missing)} (run `nni-bio setup-nni`)")
        return 1 if missing else 0
    for what, changed in (("remote trials get their own parameters", _compat.patch_v3_parameter_binding()),
                          ("the manager listens on loopback only", _compat.patch_manager_listen_address())):
        print(f"{'patched' if changed else 'already patched'}: {what}")
    return 0
