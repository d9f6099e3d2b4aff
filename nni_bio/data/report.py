"""What a data-set check found: ``DataReport``, printed by ``nni-bio data check``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataReport:
    """The result of validating a copy of a data set (``check_dataset``).

    Attributes:
        name: the data set name.
        location: where the files were found.
        splits: size of each split as ``get_dataset`` would return it (default seed).
        num_classes: distinct labels present in the training and test data.
        checksum: one line on whether the files are the genuine data set (MD5s), e.g.
            ``"genuine CIFAR-10 (7/7 files match the official MD5s)"`` or ``"CIFAR-format data ..."``.
        genuine: True when every checked file matches its official MD5, None when not checked.
        notes: further remarks (optional files missing, sizes that differ from the official ones).
    """

    name: str
    location: str
    splits: dict[str, int]
    num_classes: int
    checksum: str
    genuine: bool | None = None
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A few aligned lines for a terminal."""
        rows = [("found", self.location)]
        rows += [(split, f"{size:,}") for split, size in self.splits.items()]
        rows += [("classes", str(self.num_classes)), ("checksums", self.checksum)]
        rows += [("note", note) for note in self.notes]
        width = max(len(key) for key, _ in rows) + 1
        return "\n".join([f"{self.name}: usable"] + [f"  {key + ':':<{width}} {value}" for key, value in rows])
