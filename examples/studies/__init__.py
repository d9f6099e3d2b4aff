"""Study files for ``nni-bio study`` (shipped as ``nni_bio.examples.studies``)."""
