"""Example experiment configs, search-space files and study files (shipped as ``nni_bio.examples``; ``nni-bio
examples DIR`` copies them out)."""
