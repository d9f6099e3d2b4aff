"""Studies: the paper's comparison (mixed rules vs one rule everywhere) end to end.

``nni-bio study CONFIG.yml`` searches every arm, retrains each arm's best architecture with several
seeds, attacks every network and writes a report with a verdict. See :mod:`nni_bio.study.config`
for the study file and :func:`run_study` for the Python entry point.
"""

from nni_bio.study.config import StudyConfig as StudyConfig
from nni_bio.study.config import StudyConfigError as StudyConfigError
from nni_bio.study.config import load_study as load_study
from nni_bio.study.run import StudyIncomplete as StudyIncomplete
from nni_bio.study.run import run_study as run_study

__all__ = ["StudyConfig", "StudyConfigError", "StudyIncomplete", "load_study", "run_study"]
