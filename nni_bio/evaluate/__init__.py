"""Evaluating trained runs: how robust they are, and how they compare.

========================  ==========================================================================
``robustness.py``         FGSM, PGD, Square and transfer attacks through the rule's own and exact gradients
``run_report.py``         ``nni-bio report``: a table and a plot over trained runs (studies have
                          :mod:`nni_bio.study.report`)
========================  ==========================================================================
"""
