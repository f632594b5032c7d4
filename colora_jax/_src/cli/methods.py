"""``colora methods``: the registered algorithms and methods, as the tables in docs/baselines.md."""

from __future__ import annotations

import pathlib

from colora_jax._src import registry
from colora_jax._src.cli import common


def register(subparsers) -> None:
    """Add ``colora methods`` and its flags."""
    p = subparsers.add_parser(
        "methods",
        help="list the registered algorithms and methods",
        description="Print the registry's algorithms (FitConfig.algorithm) and methods (colora compare"
        " --methods) with their models and parameter counts, or write them into a markdown file between"
        " <!-- registry:begin --> and <!-- registry:end -->.",
    )
    p.add_argument("--write", metavar="FILE", default=None, help="refresh the tables in this markdown file")
    p.set_defaults(run=run)


def run(args) -> int:
    """Print the registry's tables, or rewrite them in ``--write``'s file; returns the exit code."""
    from colora_jax.nnx import METHOD_NAMES  # the methods with an NNX trainer (flax loads on this command only)

    if args.write is None:
        print(registry.markdown_tables(METHOD_NAMES))
        return 0
    path = pathlib.Path(args.write)
    try:
        path.write_text(registry.replace_tables(path.read_text(), METHOD_NAMES))
    except OSError as err:
        raise common.UsageError(f"cannot update {args.write} ({err.strerror or err})", "colora methods") from None
    print(f"updated the registry tables in {args.write}")
    return 0
