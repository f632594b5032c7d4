"""What ran where: the code version and the device, written next to every result."""

from __future__ import annotations

import functools
import pathlib
import subprocess

import jax


@functools.cache
def code_version() -> str:
    """``git describe --always --dirty`` of the checkout holding this package, else the version."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
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
