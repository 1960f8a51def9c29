"""An arm of the study as a value: which network, how it was trained, with or without augmentation.

Arms travel as separate fields (``run.json``, MLflow tags, ``summary.csv`` columns), never as a string to cut
apart: :attr:`Arm.label` is for people to read, :attr:`Arm.key` is what the report groups and compares by.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

ARM_STRATEGIES = ("scratch", "partial", "full", "tuned")
ARM_COLUMNS = ["model", "strategy", "augment"]  # what identifies an arm in the report's tables


@dataclass(frozen=True)
class Arm:
    """One arm. ``strategy`` is scratch, partial, full or tuned (a tuned run's ``freeze_depth`` is the depth its
    search chose, so it may differ between repeats of the same arm)."""

    model: str
    strategy: str
    augment: bool
    freeze_depth: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in ARM_STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is not one of {ARM_STRATEGIES}")

    @property
    def key(self) -> tuple[str, str, bool]:
        """(model, strategy, augment): what repeats of one arm share."""
        return (self.model, self.strategy, self.augment)

    @property
    def label(self) -> str:
        """For people: ``ratlesnetv2/full/noaug``."""
        return f"{self.model}/{self.strategy}/{'aug' if self.augment else 'noaug'}"

    def fields(self) -> dict[str, Any]:
        """The arm as ``run.json`` and the report's tables hold it."""
        return {"model": self.model, "strategy": self.strategy, "freeze_depth": int(self.freeze_depth),
                "augment": bool(self.augment)}

    def tags(self) -> dict[str, str]:
        """The arm as MLflow tags (strings)."""
        return {"model": self.model, "strategy": self.strategy, "freeze_depth": str(int(self.freeze_depth)),
                "augment": str(bool(self.augment)).lower()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "Arm":
        """The inverse of :meth:`fields`."""
        return cls(model=str(fields["model"]), strategy=str(fields["strategy"]), augment=bool(fields["augment"]),
                   freeze_depth=int(fields.get("freeze_depth", 0)))
