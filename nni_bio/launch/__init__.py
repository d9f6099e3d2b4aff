"""Launching searches with ``nnictl``: the checks before, the experiment driver during.

========================  ==========================================================================
``experiment_config.py``  the experiment YAML: reading it, its trial command, its search-space file
``preflight.py``          the checks ``nni-bio search`` runs before NNI starts (data, space, ports)
``experiment.py``         ``nnictl create``, following the REST API, the best trial
========================  ==========================================================================
"""
