"""Verbs for images: the read-only bases machines are cloned from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.jobs import run_as_job
from services.core.templating import render
from services.grammar import image_name
from services.machines.images import Image

NAME = Positional("NAME")


def image_json(image: Image) -> dict[str, Any]:
    return {"name": image.name, "suite": image.suite, "source": image.source,
            "packages": list(image.packages), "size_bytes": image.size_bytes,
            "created_at": image.created_at}


@verb("image build", role=Role.ADMIN, mutating=True, positionals=[NAME],
      flags=[Flag("suite", "Debian suite (default: the configured one)", "SUITE")])
async def run_image_build(inv: Invocation) -> Reply:
    """Build an image with debootstrap: minimal Debian plus the configured packages."""
    name = image_name(inv.args.positionals["NAME"])
    suite = inv.args.flag("suite")
    return await run_as_job(inv, "image.build",
                            {"name": name, "suite": str(suite) if suite else None})


@verb("image import", role=Role.ADMIN, mutating=True,
      positionals=[NAME, Positional("PATH")])
async def run_image_import(inv: Invocation) -> Reply:
    """Import an image from a root filesystem tarball or directory on the host."""
    name = image_name(inv.args.positionals["NAME"])
    return await run_as_job(inv, "image.import",
                            {"name": name, "path": str(Path(inv.args.positionals["PATH"]))})


@verb("image list", role=Role.VIEWER)
async def run_image_list(inv: Invocation) -> Reply:
    """List images with their size and the machines that use them."""
    images = inv.services.images.all()
    users = {i.name: inv.services.machines.image_users(i.name) for i in images}
    return Reply(text=render("replies/image_list.txt.j2", images=images, users=users),
                 data={"images": [image_json(i) | {"used_by": users[i.name]} for i in images]})


@verb("image remove", role=Role.ADMIN, mutating=True, confirm=True, positionals=[NAME])
async def run_image_remove(inv: Invocation) -> Reply:
    """Delete an image. Refused while any machine uses it."""
    name = image_name(inv.args.positionals["NAME"])
    await inv.services.machines.remove_image(name)
    return Reply(text=f"Image `{name}` removed.", data={"removed": name})
