"""The ``colora`` command line. Each subcommand lives in ``colora_jax/_src/commands``."""

from __future__ import annotations

import sys

from colora_jax._src.commands import bench, common, compare, methods, recover

COMMANDS = (recover, compare, bench, methods)


def build_parser() -> common.Parser:
    parser = common.Parser(prog="colora", description="Collaborative low-rank adaptation (CoLoRA) in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=common.Parser)
    for command in COMMANDS:
        command.register(sub)
    for p in sub.choices.values():
        common.add_runtime_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user's mistake gives one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
        common.apply_runtime_flags(args)
        return args.run(args)
    except (common.UsageError, ValueError) as err:
        print(f"colora: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("colora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
