"""Training a network, whoever asks: a trial, ``nni-bio train``, a study's retraining, the demo.

========================  ==========================================================================
``training.py``           the training loop (``TrainConfig``, ``train``, ``evaluate``)
``final_training.py``     ``nni-bio train``'s run: spec, checkpoints, ``result.json``
``model_spec.py``         the plain-JSON spec that rebuilds a run's network
``checkpoint.py``         checkpoints written atomically, read without unpickling code
``distributed.py``        ``torchrun`` process groups
``_optim.py``             optimizers that do not import ``torch._dynamo``
``monitor.py``            alignment angles and TensorBoard scalars while a network learns
``trial_runtime.py``      what runs inside any trial: output folder, reports, exit statuses
========================  ==========================================================================
"""
