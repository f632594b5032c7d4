"""What ran: the code version of the NNX path's results, for a working tree shared with others.

``colora_jax.code_version()`` marks a result ``-dirty`` whenever *any* file of the checkout is
modified; the NNX scripts only depend on the NNX path's own files, so their results record the
commit and mark ``-dirty`` only when one of those files differs from it.
"""

from __future__ import annotations

import functools
import pathlib
import subprocess

from colora_jax._src.provenance import code_version as checkout_version

# The NNX library's own files: every NNX result depends on them.
NNX_LIBRARY = ("colora_jax/nnx",)


@functools.cache
def code_version(*paths: str) -> str:
    """``git describe --always`` of HEAD, with ``-dirty`` if the NNX library or one of ``paths``
    (the script's own files) differs from it. Cached: a run records the version it started with.
    """
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "describe", "--always"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *NNX_LIBRARY, *paths],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0 and status.returncode == 0:
            return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return checkout_version()
