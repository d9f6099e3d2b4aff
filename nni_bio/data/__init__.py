"""Offline data sets: ``get_dataset(name, split)`` returns a torch Dataset of (image tensor, label).

Nothing is ever downloaded. ``digits`` ships inside scikit-learn; the others are read from a user
directory (``data_dir=`` or the ``NNI_BIO_DATA`` environment variable).
"""

from __future__ import annotations

from nni_bio.data._api import DATASETS as DATASETS
from nni_bio.data._api import DatasetInfo as DatasetInfo
from nni_bio.data._api import dataset_info as dataset_info
from nni_bio.data._api import get_dataset as get_dataset

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "get_dataset"]
