"""What ran: the code version of the NNX path's results, for a working tree shared with others.

``colora_jax.code_version()`` marks a result ``-dirty`` whenever any code file of the checkout is
modified (anything but ``figures/``, ``docs/`` and the README); the NNX scripts only depend on
the NNX path's own files, so their results record the commit and mark ``-dirty`` only when one
of those files differs from it.
"""

from __future__ import annotations

import functools

from colora_jax._src.runtime.provenance import code_version as checkout_version
from colora_jax._src.runtime.provenance import git_version

# The NNX library's own files: every NNX result depends on them.
NNX_LIBRARY = ("colora_jax/nnx",)


@functools.cache
def code_version(*paths: str) -> str:
    """``git describe --always`` of HEAD, ``-dirty`` if the NNX library or one of ``paths`` differs.

    ``paths`` are the script's own files. Cached: a run records the version it started with.
    """
    found = git_version(*NNX_LIBRARY, *paths)
    return checkout_version() if found is None else found
