"""What ran where: the code version and the device, written next to every result."""

from __future__ import annotations

import functools
import pathlib
import subprocess

import jax

# What a run writes or documents, not what it runs: a change there does not make a result dirty
# (a demo run rewrites figures/demo_recovery.json; a second run must still name a clean commit).
_NOT_CODE = ("figures", "docs", "README.md")


def git_version(*pathspecs: str) -> str | None:
    """``git describe --always`` of the checkout holding this package.

    With ``-dirty`` if a tracked file matched by ``pathspecs`` (git pathspecs, e.g.
    ``":(exclude)docs"``) differs from it; None outside a git checkout.
    """
    root = pathlib.Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "describe", "--always"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *pathspecs],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or not head.stdout.strip() or status.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


@functools.cache
def code_version() -> str:
    """The code version: ``git describe --always`` of this package's checkout, else the installed version.

    ``-dirty`` if a tracked file other than the outputs and prose (``figures/``, ``docs/``,
    ``README.md``) differs from it. Cached: a run records the version it started with.
    """
    found = git_version(".", *(f":(exclude){p}" for p in _NOT_CODE))
    if found is not None:
        return found
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "colora_jax " + version("colora_jax")
    except PackageNotFoundError:
        return "unknown"


def device_info() -> dict:
    """The backend, the device kind and count, and the JAX version."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
    }
