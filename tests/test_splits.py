"""Final-training splits: ``train+val`` (DARTS: every training image, no validation set) and the
NAS-Bench-201 3k/3k ImageNet16-120 test split."""

import json

import numpy as np
import pytest

from nni_bio.cli import main
from nni_bio.data import DataError, check_dataset, get_dataset
from nni_bio.data.fixtures import write_cifar10, write_imagenet16, write_imagenet_folder
from nni_bio.data.imagenet16 import NB201_SPLIT_FILE
from nni_bio.evaluate.run_report import load_runs, training_table
from nni_bio.train.final_training import run_final_training
from nni_bio.train.model_spec import fixed_spec
from nni_bio.train.training import TrainConfig


def quiet(_line):
    pass


def test_train_plus_val_is_every_training_image(tmp_path):
    write_cifar10(tmp_path, n=40)
    both = get_dataset("cifar10", "train+val", tmp_path)
    train, val = get_dataset("cifar10", "train", tmp_path), get_dataset("cifar10", "val", tmp_path)
    assert len(both) == len(train) + len(val) == 200
    assert both.transform.flip and both.transform.crop_padding == 4  # augmented, like train
    digits = get_dataset("digits", "train+val")
    assert len(digits) == len(get_dataset("digits", "train")) + len(get_dataset("digits", "val")) == 1400
    write_imagenet_folder(tmp_path, classes=2, per_class=5, val_per_class=1, size=24)
    assert len(get_dataset("imagenet", "train+val", tmp_path)) == 10
    write_imagenet16(tmp_path, n=12)
    assert len(get_dataset("imagenet16-120", "train+val", tmp_path)) == 110  # 11 of 12 labels per file <= 120


def test_nb201_test_split_halves_the_imagenet16_test_images(tmp_path):
    folder = write_imagenet16(tmp_path, n=24)
    full = get_dataset("imagenet16-120", "test", tmp_path)
    half = get_dataset("imagenet16-120", "test", tmp_path, test_split="nb201", seed=5)
    assert (len(full), len(half)) == (22, 11)
    assert "stratified 50/50 split, seed 0" in half.split_source and NB201_SPLIT_FILE in half.split_source
    np.testing.assert_array_equal(half.images, full.images[half.indices])
    again = get_dataset("imagenet16-120", "test", tmp_path, test_split="nb201")  # the run's seed does not matter
    assert again.indices.tolist() == half.indices.tolist()
    # with NAS-Bench-201's own file (JSON, indices as strings) its x-test half is used exactly
    xtest = [1, 4, 7, 9, 20]
    (folder / NB201_SPLIT_FILE).write_text(json.dumps(
        {"xvalid": ["int", [str(i) for i in range(22) if i not in xtest]], "xtest": ["int", [str(i) for i in xtest]]}))
    exact = get_dataset("imagenet16-120", "test", tmp_path, test_split="nb201")
    assert exact.indices.tolist() == xtest and exact.split_source.startswith("nb201 x-test: NAS-Bench-201 file")
    assert any("NB201 test split" in note and "17 x-valid / 5 x-test" in note
               for note in check_dataset("imagenet16-120", tmp_path).notes)
    (folder / NB201_SPLIT_FILE).write_text(json.dumps({"xvalid": ["int", ["0"]], "xtest": ["int", ["0", "99"]]}))
    with pytest.raises(DataError, match="do not fit the 22 test images"):
        get_dataset("imagenet16-120", "test", tmp_path, test_split="nb201")
    (folder / NB201_SPLIT_FILE).write_text("not json")
    with pytest.raises(DataError, match="not NAS-Bench-201's split file"):
        get_dataset("imagenet16-120", "test", tmp_path, test_split="nb201")


def test_nb201_test_split_is_only_offered_where_it_exists(tmp_path):
    with pytest.raises(DataError, match="digits has no 'nb201' test split.*exists for imagenet16-120"):
        get_dataset("digits", "test", test_split="nb201")
    with pytest.raises(DataError, match="unknown split 'all'"):
        get_dataset("digits", "all")


def test_final_training_on_train_plus_val_has_no_validation_metrics(tmp_path):
    lines = []
    result = run_final_training(fixed_spec("tiny-cnn", rule="usf"), dataset="digits", output=tmp_path / "run",
                                config=TrainConfig(epochs=2, lr=0.05), train_split="train+val",
                                diagnostics_every=1, log=lines.append)
    assert result["train_split"] == "train+val" and result["best_val"] is None
    assert result["final"]["val_acc"] is None and result["final"]["test_acc"] > 0.3
    assert all(m["val_acc"] is None and m["val_loss"] is None for m in result["history"])
    assert "1,400 training images / no validation set (train+val)" in lines[0]
    assert "no validation set (trained on train+val)" in lines[-1]
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["best_val"] is None and on_disk["setup"]["train_split"] == "train+val"
    assert "| none (train+val) |" in training_table(load_runs([tmp_path / "run"]))
    assert "digits (train+val)" in training_table(load_runs([tmp_path / "run"]))


def test_train_cli_records_the_splits_and_refuses_to_resume_with_others(tmp_path, capsys):
    write_imagenet16(tmp_path / "data", n=24)
    out = tmp_path / "run"
    base = ["train", "--model", "tiny-cnn", "--dataset", "imagenet16-120", "--data-dir", str(tmp_path / "data"),
            "--epochs", "1", "--no-progress", "--diagnostics-every", "0", "--output", str(out)]
    assert main([*base, "--test-split", "nb201", "--train-split", "train+val"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert (result["train_split"], result["test_split"], result["final"]["test_images"]) == ("train+val", "nb201", 11)
    assert result["final"]["test_split_source"].startswith("nb201 x-test: stratified")
    assert "imagenet16-120 (train+val, test: nb201)" in training_table(load_runs([out]))
    assert main([*base, "--resume"]) == 2
    assert "train_split, test_split differ" in capsys.readouterr().err
