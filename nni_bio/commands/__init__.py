"""Sub-commands of the ``nni-bio`` CLI: each module exposes ``register(subparsers)``."""
