"""Offline data sets: ``get_dataset(name, split)`` returns a torch Dataset of (image tensor, label).

Nothing is ever downloaded. ``digits`` ships inside scikit-learn; ``fashion-mnist`` is found in
Debian's ``dataset-fashion-mnist`` package or a user directory; the others are read from a user
directory (``data_dir=`` or the ``NNI_BIO_DATA`` environment variable), one sub-folder each:

=================  ==========================================================================
digits             bundled with scikit-learn
fashion-mnist      <data_dir>/fashion-mnist/ or /usr/share/datasets/fashion-mnist/ (IDX, .gz or not)
cifar10            <data_dir>/cifar-10-batches-py/  (data_batch_1..5, test_batch)
cifar100           <data_dir>/cifar-100-python/     (train, test)
imagenet16-120     <data_dir>/ImageNet16/           (train_data_batch_1..10, val_data)
imagenet           <data_dir>/imagenet/{train,val}/<class>/*.JPEG
=================  ==========================================================================

``nni-bio data check NAME [--data-dir DIR]`` validates a copy; ``nni-bio data list`` shows where
each data set is looked for. Pickled files are read with a restricted unpickler
(:mod:`nni_bio.data.safe_pickle`); :mod:`nni_bio.data.fixtures` writes tiny copies for tests.
"""

from __future__ import annotations

from nni_bio.data._api import DATASETS as DATASETS
from nni_bio.data._api import DataError as DataError
from nni_bio.data._api import DatasetInfo as DatasetInfo
from nni_bio.data._api import check_dataset as check_dataset
from nni_bio.data._api import dataset_info as dataset_info
from nni_bio.data._api import get_dataset as get_dataset
from nni_bio.data.report import DataReport as DataReport

__all__ = ["DATASETS", "DataError", "DataReport", "DatasetInfo", "check_dataset", "dataset_info", "get_dataset"]
