"""What nesting needs from the host, and whether each running --nesting machine has it:
its derived image, the host's images offered read-only, its unit template."""

from __future__ import annotations

from services.core.doctor import Check
from services.machines import clones
from services.machines.lifecycle import Machines
from services.nesting.part import FEATURE, UNIT_FILE, NestingPart


async def nesting_checks(part: NestingPart, machines: Machines) -> list[Check]:
    checks = []
    images = machines.images
    default = images.config.default
    if images.exists(default):
        name = images.derived_name(images.get(default), FEATURE, sorted(part.config.packages))
        checks.append(Check("nesting image", True, f"{name}: " + (
            "built" if images.exists(name) else
            "built on the first `create --nesting` (~10 s with a near mirror)")))
    outers = [m for m in machines.all() if FEATURE in m.features and m.leader_pid]
    wrong = []
    for outer in outers:  # images made since it started are offered when an inner needs one
        default_image = part.offered(outer.name) / default
        if images.exists(default) and not clones.is_mounted(default_image):
            wrong.append(f"{outer.name}: the default image {default} is not offered")
        if not (machines.paths(outer.name).root / UNIT_FILE).is_file():
            wrong.append(f"{outer.name}: no {UNIT_FILE}")
    checks.append(Check("nesting machines", not wrong, "; ".join(wrong) or (
        f"all {len(outers)} running --nesting machines can run machines inside"
        if outers else "no --nesting machine is running"),
        "`restart NAME`; for a missing unit template, `feature NAME nesting on --restart`"))
    return checks
