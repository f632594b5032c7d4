"""Shared pieces of the ``colora`` command line: flags, config building, output helpers."""

from __future__ import annotations

import argparse
import json
import math
import sys

from colora_jax._src import registry
from colora_jax._src.model.config import INITS, MODELS, PERSONAL_MEANS, PERSONALS, FitConfig, ProblemConfig
from colora_jax._src.runtime.serialization import to_jsonable


class UsageError(Exception):
    """A user's mistake on the command line: reported as ``{prog}: error: {message}``, exit code 2."""

    def __init__(self, message: str, prog: str = "colora"):
        """Keep the message and the command it belongs to."""
        super().__init__(message)
        self.prog = prog  # the command the mistake belongs to ("colora recover")


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line) instead of printing usage and exiting."""

    def error(self, message):
        """Raise UsageError instead of printing the usage and exiting."""
        raise UsageError(message, self.prog)


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "a non-negative integer")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_problem_flags(p: argparse.ArgumentParser, *, many_samples: bool = False, **defaults) -> None:
    """Flags describing the planted problem (``ProblemConfig``) and the trials.

    ``many_samples``: ``--samples`` takes one or more counts (a sweep fitted on nested samples).
    """
    d = ProblemConfig()
    g = p.add_argument_group("problem")
    g.add_argument(
        "--model",
        choices=MODELS,
        default=defaults.get("model", d.model),
        help="regression: y = W_i x + e (vector output); sensing: y = <X, W_i> + e",
    )
    g.add_argument("--users", type=positive_int, default=defaults.get("users", d.users), help="number of users k")
    g.add_argument("--d-out", type=positive_int, default=defaults.get("d_out", d.d_out), help="output dimension")
    g.add_argument("--d-in", type=positive_int, default=defaults.get("d_in", d.d_in), help="input dimension")
    g.add_argument("--rank", type=positive_int, default=defaults.get("rank", d.rank), help="adapter rank r")
    if many_samples:
        g.add_argument(
            "--samples",
            type=positive_int,
            nargs="+",
            default=[defaults.get("samples", d.samples)],
            help="training samples per user; several values fit each trial's first n samples for every n"
            " (one compiled program, common random numbers)",
        )
    else:
        g.add_argument(
            "--samples",
            type=positive_int,
            default=defaults.get("samples", d.samples),
            help="training samples per user",
        )
    g.add_argument(
        "--test-samples",
        type=_nonnegative_int,
        default=d.test_samples,
        help="held-out samples per user (default 0: the exact population risk of the Gaussian design)",
    )
    g.add_argument("--noise", type=_finite_float, default=d.noise, help="noise standard deviation")
    g.add_argument(
        "--task-angle",
        type=_finite_float,
        default=d.task_angle,
        help="principal angle (radians, in [0, pi/2]) between each user's subspaces and the shared ones",
    )
    g.add_argument(
        "--deviation",
        type=_finite_float,
        default=d.deviation,
        help="relative Frobenius size of a personal full-rank term added to each W_i*",
    )
    g.add_argument(
        "--personal",
        choices=PERSONALS,
        default=d.personal,
        help="personal part of the truth and of the fit: full r x r or diagonal",
    )
    g.add_argument("--condition", type=_finite_float, default=d.condition, help="condition number of each S_i*")
    g.add_argument(
        "--personal-mean",
        choices=PERSONAL_MEANS,
        default=d.personal_mean,
        help="'zero' re-centres the S_i* to average zero",
    )
    g.add_argument(
        "--personal-groups",
        type=_nonnegative_int,
        default=d.personal_groups,
        help="0: every user its own S_i*; g > 0: only g distinct S_i* (low task diversity)",
    )
    g.add_argument("--x64", action="store_true", help="float64 throughout (default float32)")
    g.add_argument("--trials", type=positive_int, default=defaults.get("trials", 10), help="independent trials")
    g.add_argument("--seed", type=int, default=0, help="PRNG seed of the experiment")


def add_fit_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the CoLoRA estimator (``FitConfig``)."""
    d = FitConfig()
    g = p.add_argument_group("estimator")
    g.add_argument(
        "--algorithm",
        choices=tuple(registry.ALGORITHMS),
        default=d.algorithm,
        help=f"the estimator, one of {', '.join(registry.ALGORITHMS)} (`colora methods` says what each does)",
    )
    g.add_argument("--iters", type=positive_int, default=d.iters, help="iteration budget")
    g.add_argument("--tol", type=_finite_float, default=d.tol, help="stop when the relative decrease < tol")
    g.add_argument("--init", choices=INITS, default=d.init, help="initialization of U, V")
    g.add_argument("--step-size", type=_finite_float, default=d.step_size, help="altgd: step times 1/L; scaledgd: eta")
    g.add_argument("--learning-rate", type=_finite_float, default=d.learning_rate, help="adam learning rate")


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes: where compiled programs are cached."""
    g = p.add_argument_group("runtime")
    g.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=None,
        help="persistent compilation cache directory (default $COLORA_JAX_CACHE_DIR, else"
        " $XDG_CACHE_HOME/colora_jax/jax or ~/.cache/colora_jax/jax)",
    )
    g.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, cache nothing")
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU cores XLA may use (default $COLORA_JAX_THREADS, else all); on a busy machine 1 is"
        " often several times faster (docs/scale.md)",
    )


def apply_runtime_flags(args) -> None:
    """CPU threads, the compile cache (unless disabled) and float64 when asked, before anything compiles."""
    import jax

    from colora_jax._src.runtime.caches import enable_compile_cache
    from colora_jax._src.runtime.cpu_threads import limit_cpu_threads

    limit_cpu_threads(args.threads)
    enable_compile_cache(args.compile_cache, disable=args.no_compile_cache)
    if getattr(args, "x64", False):
        jax.config.update("jax_enable_x64", True)


def problem_config(args, samples: int | None = None) -> ProblemConfig:
    """The ProblemConfig of the parsed flags (samples: the largest of several, or ``samples``).

    Not validated here: the command validates it once with the whole run (``trials.trial_request``).
    """
    if samples is None:
        samples = max(args.samples) if isinstance(args.samples, list) else args.samples
    return ProblemConfig(
        model=args.model,
        users=args.users,
        d_out=args.d_out,
        d_in=args.d_in,
        rank=args.rank,
        samples=samples,
        test_samples=args.test_samples,
        noise=args.noise,
        task_angle=args.task_angle,
        deviation=args.deviation,
        personal=args.personal,
        condition=args.condition,
        personal_mean=args.personal_mean,
        personal_groups=args.personal_groups,
        x64=args.x64,
    )


def fit_config(args, rank: int | None = None) -> FitConfig:
    """The FitConfig of the parsed flags (``rank``, if given, replaces ``--rank``).

    Not validated here: the command validates it once with the whole run (``trials.trial_request``).
    """
    return FitConfig(
        rank=args.rank if rank is None else rank,
        personal=args.personal,
        algorithm=args.algorithm,
        iters=args.iters,
        tol=args.tol,
        init=args.init,
        step_size=args.step_size,
        learning_rate=args.learning_rate,
    )


def print_json(obj) -> None:
    """Print ``obj`` as one line of JSON on stdout."""
    json.dump(to_jsonable(obj), sys.stdout, indent=None)
    sys.stdout.write("\n")


def progress(total: int, desc: str, enabled: bool):
    """A tqdm progress bar on stderr (silent when disabled or when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=None if enabled else True, file=sys.stderr)
