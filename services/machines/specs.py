"""The typed arguments of machine operations, as they are stored with their job.

``to_json`` writes the canonical text of each value; ``from_json`` reads it back through
the same grammar (services/grammar/), so a job run after a restart sees exactly the
values the user's command was parsed into.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.grammar.features import feature
from services.grammar.names import image_name, machine_name
from services.machines.parts import MachinePart, PartOptions


@dataclass(frozen=True, slots=True)
class MachineRef:
    """The one argument of start, stop, restart and destroy."""

    name: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MachineRef:
        return cls(machine_name(str(data["name"])))


@dataclass(frozen=True, slots=True)
class CreateSpec:
    name: str
    image: str
    cpu: float | None = None  # CPUs' worth of time
    memory_bytes: int | None = None
    pids: int | None = None  # process limit; None: the default (16384)
    start: bool = True
    features: tuple[str, ...] = ()
    options: Mapping[str, PartOptions] = field(default_factory=dict)  # by part name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image, "cpu": self.cpu,
                "memory_bytes": self.memory_bytes, "pids": self.pids, "start": self.start,
                "features": list(self.features),
                "options": {part: o.to_json() for part, o in self.options.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], parts: Sequence[MachinePart]) -> CreateSpec:
        by_name = {p.name: p for p in parts}
        return cls(
            name=machine_name(str(data["name"])), image=image_name(str(data["image"])),
            cpu=data.get("cpu"), memory_bytes=data.get("memory_bytes"), pids=data.get("pids"),
            start=bool(data.get("start", True)),
            features=tuple(feature(str(f)) for f in data.get("features", ())),
            options={part: by_name[part].options_from_json(raw)
                     for part, raw in data.get("options", {}).items()})


@dataclass(frozen=True, slots=True)
class FeatureChange:
    """`feature NAME FEATURE on|off [--restart]`."""

    name: str
    feature: str
    on: bool
    restart: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "feature": self.feature, "on": self.on,
                "restart": self.restart}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureChange:
        return cls(machine_name(str(data["name"])), feature(str(data["feature"])),
                   bool(data["on"]), bool(data.get("restart", False)))
