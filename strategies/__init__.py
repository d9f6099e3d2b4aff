"""Search strategies (installed as ``nni_bio.strategies``)."""
