"""Verbs for images: the read-only bases machines are cloned from."""

from __future__ import annotations

from pathlib import Path

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.jobs import run_job
from handlers.registry import verb
from handlers.roles import Role
from services.grammar.names import debian_suite, image_name
from services.machines.jobs import ImageBuild, ImageImport

NAME = Positional("NAME", parse=image_name)


@verb("image build", role=Role.ADMIN, mutating=True, positionals=[NAME],
      flags=[Flag("suite", "Debian suite (default: the configured one)", "SUITE",
                  parse=debian_suite)])
async def run_image_build(inv: Invocation) -> Reply:
    """Build an image with debootstrap: minimal Debian plus the configured packages."""
    return await run_job(inv, "image.build", ImageBuild(inv.args["NAME"], inv.args.get("suite")))


@verb("image import", role=Role.ADMIN, mutating=True,
      positionals=[NAME, Positional("PATH", parse=Path)])
async def run_image_import(inv: Invocation) -> Reply:
    """Import an image from a root filesystem tarball or directory on the host."""
    return await run_job(inv, "image.import", ImageImport(inv.args["NAME"], inv.args["PATH"]))


@verb("image list", role=Role.VIEWER)
async def run_image_list(inv: Invocation) -> Reply:
    """List images with their size and the machines that use them."""
    return Reply(data={"images": [
        image.to_json() | {"used_by": inv.services.machines.records.using_image(image.name)}
        for image in inv.services.images.all()]}, view="image_list")


@verb("image remove", role=Role.ADMIN, mutating=True, confirm=True, positionals=[NAME])
async def run_image_remove(inv: Invocation) -> Reply:
    """Delete an image. Refused while any machine uses it."""
    await inv.services.machines.remove_image(inv.args["NAME"])
    return Reply(data={"removed": inv.args["NAME"]}, view="image_removed")
