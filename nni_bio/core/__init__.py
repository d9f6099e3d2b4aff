"""The rule core: pure PyTorch, no NNI. Every other layer of nni-bio stands on it.

==========================  ==========================================================================
``rule.py``                 the learning-rule contract (``LearningRule``, ``Feedback``, ``RuleInfo``)
``layers.py``               ``RuleLinear`` / ``RuleConv2d``: layers whose backward follows a rule
``_registry.py``            where rules come from (entry points ``nni_bio.rules``), ``get_rule``, did-you-mean
``error_bus.py``            the output-error bus direct-feedback rules (DFA) read
``swap.py``                 switching rules on the same weights, ``rule_map``
``torch_models.py``         ``convert`` / ``to_torch``: any PyTorch model with any rule
``timm_models.py``          ``timm:<name>`` models as rule networks
``errors.py``               the ``NniBioError`` hierarchy
``eager_under_compile.py``  host-state code kept out of ``torch.compile`` graphs, without importing dynamo early
``safe_json.py``            JSON in and out: reading untrusted files, writing results atomically
``_moved.py``               old import paths that warn for one release (``nni_bio.rule``, ``nni_bio.layers``)
==========================  ==========================================================================

The built-in rules are in :mod:`nni_bio.rules`, one layer up; the conformance kit plugin authors run
is :mod:`nni_bio.testing`.
"""
