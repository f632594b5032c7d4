"""The ``colora`` command line. Each subcommand lives in ``colora_jax/_src/cli``."""

from __future__ import annotations

import os
import sys

from colora_jax._src.cli import bench, common, compare, methods, recover
from colora_jax._src.runtime import interrupts

COMMANDS = (recover, compare, bench, methods)
BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


def build_parser() -> common.Parser:
    """The ``colora`` argument parser with every subcommand."""
    parser = common.Parser(prog="colora", description="Collaborative low-rank adaptation (CoLoRA) in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=common.Parser)
    for command in COMMANDS:
        command.register(sub)
    for p in sub.choices.values():
        common.add_runtime_flags(p)
    return parser


def _quiet_output() -> None:
    """Point stdout and stderr at /dev/null: the reader is gone, and Python's final flush must not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user's mistake gives one line on stderr and exit code 2.

    ``colora`` alone prints the usage and that line. SIGINT at any moment gives one line and
    exit code 130 (``interrupts``); output into a pipe whose reader closed ends quietly with 141.
    ``argv=None`` means this call is the process (the console script): its SIGINT handling then
    stays until the process exits, else the caller's handler is put back.
    """
    started = None
    try:
        try:
            started = interrupts.start()
            parser = build_parser()
            if not (sys.argv[1:] if argv is None else argv):
                sys.stderr.write(parser.format_usage())
                raise common.UsageError(f"choose a command: {', '.join(c.__name__.rsplit('.')[-1] for c in COMMANDS)}")
            args = parser.parse_args(argv)
            common.apply_runtime_flags(args)
            code = args.run(args)
            sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's shutdown
        except BrokenPipeError:
            _quiet_output()
            return BROKEN_PIPE
        except Exception as err:
            if interrupts.interrupted():  # the KeyboardInterrupt became another error on its way here
                raise KeyboardInterrupt from None
            if not isinstance(err, (common.UsageError, ValueError)):
                raise
            print(f"{getattr(err, 'prog', 'colora')}: error: {err}", file=sys.stderr)
            code = 2
        if interrupts.interrupted():  # the KeyboardInterrupt was swallowed on its way here
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        interrupts.report()
        return interrupts.EXIT_CODE
    finally:
        interrupts.finish(started, process_ends=argv is None)


if __name__ == "__main__":
    sys.exit(main())
