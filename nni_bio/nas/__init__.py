"""The NNI integration: rules as NNI mutables, and what a search space is built from.

========================  ==========================================================================
``mutables.py``           ``rule_choice`` / ``op_rule_choice`` (``LayerChoice`` s), ``search_space_json``, ``freeze``
``_compat.py``            every shim NNI 3.0 needs on today's stack, in one place
``candidates.py``         ``op@rule`` candidate names, ``unwrap_choice`` (pure PyTorch)
``ops.py``                rule-aware cell operations of the DARTS and NAS-Bench-201 spaces (pure PyTorch)
``fixed_models.py``       fixed networks (``small-cnn``, ``resnet20``, ``timm:...``) for baselines and retraining
========================  ==========================================================================

Only ``mutables.py`` and ``_compat.py`` import NNI; nothing below this package does. The search spaces
themselves are :mod:`nni_bio.search_spaces`.
"""
