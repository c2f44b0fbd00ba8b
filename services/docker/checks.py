"""What Docker inside machines needs from the host, and whether each --docker machine
has it: the unified cgroup hierarchy, the derived image, overlay2 storage."""

from __future__ import annotations

from services.core.doctor import Check
from services.docker.part import FEATURE, DockerPart
from services.machines import inside
from services.machines.cgroups import CGROUP_ROOT, unified_only
from services.machines.lifecycle import Machines
from services.machines.status import MachineState


async def docker_checks(part: DockerPart, machines: Machines) -> list[Check]:
    unified = unified_only() or (CGROUP_ROOT / "unified" / "cgroup.procs").exists()
    checks = [Check("cgroup2 for Docker", unified,
                    "cgroup2 is mounted (" + ("unified host" if unified_only() else
                                              "hybrid: /sys/fs/cgroup/unified") + ")"
                    if unified else "no cgroup2 hierarchy on this host",
                    "boot with systemd.unified_cgroup_hierarchy (or the hybrid default): "
                    "Docker's runc inside a machine needs cgroup2")]
    images = machines.images
    default = images.config.default
    if images.exists(default):
        base = images.get(default)
        name = images.derived_name(base, FEATURE, sorted(part.config.packages))
        built = images.exists(name)
        checks.append(Check("docker image", True,
                            f"{name}: " + ("built" if built else
                                           "built on the first `create --docker` (~10 s "
                                           "with a near mirror)")))
    docker_machines = [m for m in machines.all()
                       if FEATURE in m.features and m.state is MachineState.RUNNING]
    wrong = []
    for machine in docker_machines:
        try:
            result = await inside.run(machines, machine.name,
                                      ["docker", "info", "--format", "{{.Driver}}"], timeout=15)
            driver = result.stdout.strip() if result.returncode == 0 else "not answering"
        except Exception as exc:  # a machine's trouble is this check's finding, not ours
            driver = f"not reachable ({exc})"
        if driver != "overlay2":
            wrong.append(f"{machine.name}: {driver}")
    checks.append(Check("docker storage", not wrong,
                        "; ".join(wrong) if wrong else
                        (f"overlay2 in all {len(docker_machines)} running --docker machines"
                         if docker_machines else "no --docker machine is running"),
                        "`logs NAME`; `restart NAME` (its /var/lib/docker must be the "
                        "directory ctbot binds from the host)"))
    return checks
