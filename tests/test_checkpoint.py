"""Checkpoints: atomic writes, weights-only reads, random-state capture."""

import random

import numpy as np
import pytest
import torch

from nni_bio.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_round_trip_is_plain_data_loadable_with_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    generator = torch.Generator().manual_seed(3)
    payload = {"epoch": 2, "model": {"w": torch.arange(4.0)}, "rng": rng_state(generator), "history": [{"a": 1.0}]}
    save_checkpoint(path, payload)
    loaded = torch.load(path, weights_only=True)  # what load_checkpoint does: no code can come with the file
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert load_checkpoint(path)["history"] == [{"a": 1.0}]


def test_rng_state_restores_every_stream(tmp_path):
    generator = torch.Generator().manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(generator)})

    def draw():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
                torch.randperm(10, generator=generator).tolist())

    first = draw()
    torch.manual_seed(99), np.random.seed(99), random.seed(99), generator.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], generator)
    assert draw() == first


def test_a_failing_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)


def test_missing_or_damaged_checkpoints_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")
