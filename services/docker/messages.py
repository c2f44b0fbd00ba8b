"""What the Docker feature says to users: errors and progress lines, in one place."""

from __future__ import annotations


def ready(driver: str, seconds: float) -> str:
    return f"docker: dockerd answers (storage driver {driver}) {seconds:.1f} s after boot"


def not_ready(name: str, seconds: float, said: str) -> str:
    return (f"dockerd in {name} did not answer within {seconds:.0f} s ({said.strip()[-200:]}); "
            f"`logs {name}` shows why")


def wrong_driver(name: str, driver: str) -> str:
    return (f"dockerd in {name} uses the {driver} storage driver, not overlay2: its "
            "/var/lib/docker is not the directory ctbot binds from the host")


def no_docker(name: str) -> str:
    return f"{name} has no Docker: `feature {name} docker on` (then restart it)"


def not_running(name: str) -> str:
    return f"{name} is not running: `start {name}` first"


def docker_failed(name: str, action: str, said: str) -> str:
    return f"`docker {action}` in {name} failed: {said.strip()[-500:] or 'no output'}"


def bad_container(text: str) -> str:
    return (f"{text} is not a container name or id (letters, digits, '_', '.', '-', "
            "starting with a letter or digit; at most 128)")
