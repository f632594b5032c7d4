"""Scaffolding shared by the proof scripts: flags, sweeps, fitted rates, the JSON record, PASS/FAIL.

Every script ``python -m proofs_numerics.NAME [--smoke] [--fresh] [--no-progress] [--out DIR]``
writes ``DIR/NAME.png`` and ``DIR/NAME.json`` (default ``figures/``); the JSON holds
``claim``, ``passed``, ``measured``, ``config`` (the resolved frozen dataclass), ``smoke``,
``seed``, ``code_version``, ``device``, ``seconds``, ``figure`` and ``results`` (the data the
figure shows).

Registered claims, confirmed on a fresh seed. A script's thresholds live in its ``Config``,
written before the runs that judge them (from theory, or from an exploration run on the
exploration seed). ``--confirm`` runs the same script with every ``confirmation_X`` field of the
Config in place of ``X`` (the seeds), writes its record to ``RESULTS/confirmation/NAME.json``
and attaches it to ``DIR/NAME.json`` as ``"confirmation": {"seed", "passed", "claims",
"measured", ...}`` (``attach_confirmation``). The verdict of record is the confirmation's:
``passed`` is the confirmation run's, ``exploration_passed`` the first run's. ``run_all`` runs
both, exploration first. Sweeps resume from ``results/NAME.jsonl`` (``results/smoke/`` for ``--smoke``);
compiled executables are cached in the persistent compilation cache
(``colora_jax.enable_compile_cache``), so a second run skips compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

import jax
import numpy as np

from colora_jax import (
    Cell,
    SweepResult,
    code_version,
    data_digest,
    degrees_of_freedom,
    device_info,
    enable_compile_cache,
    limit_cpu_threads,
    run_cells,
    statistics,
    sweep,
    to_jsonable,
)

SUCCESS = 1e-3  # exact recovery: stacked relative error ||W_hat - W*||_F / ||W*||_F <= 1e-3 (the CLI default)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def arguments(doc: str) -> argparse.Namespace:
    """The common flags of every proof script."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny configuration: the whole pipeline in seconds (CI)")
    p.add_argument("--fresh", action="store_true", help="recompute every sweep cell (ignore results/NAME.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--out",
        default=None,
        help="directory for NAME.png and NAME.json (default figures/;"
        " with --smoke results/smoke/figures, so the committed figures stay untouched)",
    )
    p.add_argument("--results", default="results", help="directory of the resumable sweep files")
    p.add_argument(
        "--confirm",
        action="store_true",
        help="the confirmation run: the Config's confirmation seeds, its record attached to DIR/NAME.json",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="compute the sweep's groups in this many processes, one core each (same results; default 1)",
    )
    args = p.parse_args()
    args.out = args.out or (os.path.join(args.results, "smoke", "figures") if args.smoke else "figures")
    args.record_out = args.out  # where NAME.json of record lives; a confirmation writes its own elsewhere
    if args.confirm:
        args.out = confirmation_folder(args)  # the confirmation's figure and record, beside the sweep files
    compile_cache()
    return args


def configure(config, args):
    """The configuration a run uses: ``config`` itself, or with ``--confirm`` every field ``X``
    that has a ``confirmation_X`` replaced by that field's value (the registered fresh seeds)."""
    if not getattr(args, "confirm", False):
        return config
    try:
        return _confirmation_config(config)
    except ValueError as err:
        print(f"--confirm: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _confirmation_config(config):
    fields = {f.name for f in dataclasses.fields(config)}
    moved = {name[len("confirmation_") :] for name in fields if name.startswith("confirmation_")}
    if not moved or not moved <= fields:
        raise ValueError(
            f"{type(config).__name__} registers no confirmation seed for every confirmation_ field: "
            f"add confirmation_seed (and confirmation_X for each other seed X) to the Config"
        )
    changes = {name: getattr(config, f"confirmation_{name}") for name in moved}
    if any(changes[name] == getattr(config, name) for name in moved):
        raise ValueError(f"a confirmation seed of {type(config).__name__} equals its exploration seed: {changes}")
    return dataclasses.replace(config, **changes)


@functools.cache
def adam(learning_rate: float):
    """One ``optax.adam`` per learning rate for the NNX scripts.

    ``nnx.jit`` keys a compiled training step on its optimizer, so a fresh (equal) one at each fit
    would trace and lower that step again (same numbers).
    """
    import optax

    return optax.adam(learning_rate)


def compile_cache() -> None:
    """The persistent compilation cache (the user's cache directory; ``COLORA_JAX_CACHE_DIR`` moves or
    disables it): compiling dominates small sweeps on a CPU, a second run skips it. And XLA on one
    core unless ``COLORA_JAX_THREADS`` says otherwise: XLA splits a long sum over its threads, so
    the thread count changes rounding (the convergence figure: 2016 of its numbers between one
    and two threads), and one thread gives the committed figures bit for bit on any machine
    (``--workers N`` runs N such processes)."""
    limit_cpu_threads(default=1)
    enable_compile_cache()


def run_sweep(name: str, cells, args, compute=run_cells, tag: str = "") -> SweepResult:
    """``sweep`` over ``cells`` with the script's results file and flags."""
    folder = os.path.join(args.results, "smoke") if args.smoke else args.results
    return sweep(
        cells,
        compute,
        path=os.path.join(folder, f"{name}.jsonl"),
        tag=tag,
        fresh=args.fresh,
        progress=not args.no_progress,
        desc=name,
        workers=getattr(args, "workers", 1),
    )


def array_digest(tree) -> str:
    """SHA-256 (20 hex digits) of the bytes of every array in ``tree`` (``colora_jax.data_digest``)."""
    update, digest = data_digest()
    update(jax.device_get(tree))
    return digest()


def with_trace(cells: list[Cell]) -> list[dict]:
    """Computation of a group of cells keeping each trial's per-iteration trace."""
    return run_cells(cells, trace=True)


def dof_sensing(users: int, d_out: int, d_in: int, rank: int) -> float:
    """``m*(k) = r^2 + r (d_out + d_in - 2 r) / k`` (``colora_jax.degrees_of_freedom``, sensing)."""
    return degrees_of_freedom("sensing", users, d_out, d_in, rank)


def dof_regression(users: int, d_in: int, rank: int) -> float:
    """``r + (d_in - r) / k`` (``colora_jax.degrees_of_freedom``, regression: why not ``m*(k) / d_out``)."""
    return degrees_of_freedom("regression", users, d_in, d_in, rank)


def noise_error(
    model: str, users: int, samples: int, d_out: int, d_in: int, rank: int, noise: float, personal_norm: float
) -> float:
    """Predicted stacked relative error ``||W_hat - W*||_F / ||W*||_F`` of CoLoRA's least squares under noise.

    Near the truth the estimator is least squares on the tangent space of the model, whose
    Fisher information per sample is ``I / sigma^2`` in both models, so the error is
    ``sigma sqrt(m*(k) / n) / ||S*||_F`` for large n (``m*(k) = r^2 + r (d_out + d_in - 2r) / k``,
    the parameters per user). At finite n each block of parameters is a least squares with
    Gaussian regressors, and ``E tr((G^T G)^-1) = q / (M - q - 1)`` for ``M`` equations in ``q``
    regressors inflates its share by ``M / (M - q - 1)``, where ``M`` counts the equations left
    after the other blocks are eliminated:

    * sensing (one equation per sample, ``N = k n``): personal ``r^2`` with factor
      ``n / (n - r^2 - 1)``, shared ``p = r (d_out + d_in - 2r)`` (per user ``p / k``) with factor
      ``N / (N - k r^2 - p - 1)``;
    * regression (regressors of a sample are its projected input, shared by its ``d_out`` outputs):
      personal ``r^2`` with ``n / (n - r - 1)``; output side ``r (d_out - r) / k`` with
      ``N / (N - k r - r - 1)``; input side ``r (d_in - r) / k`` with ``N / (N - k r - d_in - 1)``.

    ``error^2 = sigma^2 / (n ||S*||_F^2) * sum_blocks (parameters per user x factor)``.
    """
    r, k, n = rank, users, samples
    N = k * n
    if model == "sensing":
        p = r * (d_out + d_in - 2 * r)
        total = r * r * n / (n - r * r - 1) + (p / k) * N / (N - k * r * r - p - 1)
    else:
        total = (
            r * r * n / (n - r - 1)
            + (r * (d_out - r) / k) * N / (N - k * r - r - 1)
            + (r * (d_in - r) / k) * N / (N - k * r - d_in - 1)
        )
    return float(noise * np.sqrt(total / n) / personal_norm)


sample_grid = statistics.sample_grid  # (benchmarks/varpro_study.py imports it from here)


def threshold(x, probability, level: float = 0.5) -> float:
    """Where ``probability`` first crosses ``level``, interpolated in log x (display only).

    No verdict uses this: thresholds with intervals come from each trial's own threshold
    (``colora_jax.statistics.trial_thresholds`` and ``median_interval``).
    """
    x, p = np.asarray(x, float), np.asarray(probability, float)
    above = np.nonzero(p >= level)[0]
    if above.size == 0:
        return float("inf")
    i = above[0]
    if i == 0:
        return float(x[0])
    t = (level - p[i - 1]) / (p[i] - p[i - 1])
    return float(np.exp(np.log(x[i - 1]) + t * (np.log(x[i]) - np.log(x[i - 1]))))


def success_table(results: list[dict], key: str = "rel_error") -> np.ndarray:
    """``(trials, cells)`` exact-recovery table of a row of cells (``key`` <= ``SUCCESS``)."""
    return np.stack([np.asarray(r["evaluation"][key], float) <= SUCCESS for r in results], axis=1)


def threshold_summary(grid, success, m_star: float, level: float = statistics.LEVEL) -> dict:
    """Everything a threshold claim needs from a ``(trials, len(grid))`` success table.

    ``n50`` is where the success rate crosses one half (``statistics.rate_threshold``: the
    smallest grid n whose observed rate is >= 1/2, with the interval from the Clopper-Pearson
    bands), the same in units of ``m_star``; the integer floor ``ceil(m*)/m*``; the success rate
    at every n with its band; the secondary first-success median (``n50_first_success``, biased
    low when trials are not monotone in n), the trials that fail again above their first
    success and their share; and the success table itself (``table``), for ratios of thresholds.
    """
    th = statistics.trial_thresholds(grid, success)
    rate = statistics.rate_threshold(grid, success, level)
    trials = success.shape[0]
    successes = success.sum(axis=0)
    low, high = statistics.binomial_interval(successes, trials, level)
    return {
        "samples": [int(n) for n in grid],
        "m_star": m_star,
        "trials": trials,
        "success": successes / trials,
        "success_low": low,
        "success_high": high,
        "table": np.asarray(success, bool).astype(int).tolist(),
        "thresholds": th.values,
        "nonmonotone": th.nonmonotone.tolist(),
        "nonmonotone_fraction": rate.nonmonotone,
        "n50": rate.n50,
        "n50_low": rate.low,
        "n50_high": rate.high,
        "n50_first_success": rate.first_success_median,
        "ratio": rate.n50 / m_star,
        "ratio_low": rate.low / m_star,
        "ratio_high": rate.high / m_star,
        "floor": statistics.integer_floor(m_star),
    }


def threshold_ratio(a: dict, b: dict, level: float = statistics.LEVEL) -> statistics.MedianInterval:
    """``n50_a / n50_b`` of two ``threshold_summary`` records, with its Bonferroni interval
    (``statistics.rate_threshold_ratio``)."""
    return statistics.rate_threshold_ratio(
        a["samples"], np.asarray(a["table"], bool), b["samples"], np.asarray(b["table"], bool), level
    )


class Claims:
    """The pre-registered sub-claims of a script and their verdicts (``colora_jax.statistics.decide``).

    ``add`` records one: the measured value with its interval, the bounds it must lie in, and
    where the bounds come from; the script passes when every sub-claim holds (an interval that
    straddles a bound is "undecided": not shown, so not a PASS).
    """

    def __init__(self):
        self.items: list[dict] = []

    def add(
        self,
        name: str,
        value: float,
        low: float,
        high: float,
        *,
        lower: float = -np.inf,
        upper: float = np.inf,
        source: str = "",
    ) -> str:
        verdict = statistics.decide(low, high, lower, upper)
        self.items.append(
            {
                "claim": name,
                "value": value,
                "low": low,
                "high": high,
                "lower": lower,
                "upper": upper,
                "source": source,
                "verdict": verdict,
            }
        )
        return verdict

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(c["verdict"] == "holds" for c in self.items)

    def summary(self) -> dict:
        """``{name: "value [low, high] verdict"}`` for the printed line and the JSON's ``measured``."""
        return {
            c["claim"]: f"{_short(c['value'])} [{_short(c['low'])}, {_short(c['high'])}] {c['verdict']}"
            for c in self.items
        }


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Label a log axis with plain numbers (20, 0.002) instead of 2x10^1: decades and, between
    them, the multiples 2, 3 and 5."""
    import matplotlib.ticker as ticker

    def label(value, _):
        if value <= 0:
            return ""
        mantissa = round(value / 10 ** np.floor(np.log10(value) + 1e-9), 6)
        return f"{value:g}" if mantissa in (1, 2, 3, 5) else ""

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(ticker.FuncFormatter(label))
    target.set_minor_formatter(ticker.FuncFormatter(label))


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (a timing that other jobs' load does not inflate)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finish(
    name: str,
    args,
    config,
    *,
    claim: str,
    passed: bool,
    measured: dict,
    results: dict,
    started: float,
    figure: str,
    extra: dict | None = None,
    claims: Claims | None = None,
) -> dict:
    """Write ``NAME.json`` next to the figure and print the claim with PASS/FAIL and the measured figures.

    With ``claims`` the record also holds every sub-claim (value, interval, bounds, source, verdict).
    """
    if claims is not None:
        extra = {**(extra or {}), "claims": claims.items}
    record = {
        "name": name,
        "claim": claim,
        "passed": bool(passed),
        "measured": measured,
        "config": dataclasses.asdict(config),
        "smoke": args.smoke,
        "seed": config.seed,
        "code_version": code_version(),
        "device": device_info(),
        "seconds": round(time.time() - started, 1),
        "figure": os.path.relpath(figure),
        "results": results,
        **(extra or {}),
    }
    confirming = getattr(args, "confirm", False)
    folder = args.out
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(to_jsonable(record), f, indent=1)
    summary = ", ".join(f"{k}={_short(v)}" for k, v in measured.items())
    label = "confirmation " if confirming else ""
    print(f"{label}{'PASS' if passed else 'FAIL'}: {claim}  [{summary}; {record['seconds']} s]", flush=True)
    if confirming:
        try:
            record_path = os.path.join(getattr(args, "record_out", args.out), f"{name}.json")
            attach_confirmation(record_path, os.path.join(folder, f"{name}.json"))
        except ValueError as err:
            print(f"{name}: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    return record


def confirmation_folder(args) -> str:
    """Where a ``--confirm`` run writes its own record and figure (beside the sweep files)."""
    folder = os.path.join(args.results, "smoke") if args.smoke else args.results
    return os.path.join(folder, "confirmation")


def attach_confirmation(record_path: str, confirmation_path: str) -> dict:
    """Attach the confirmation record to the exploration record at ``record_path`` (rewritten).

    Both must come from the same code version and the same configuration apart from the seeds
    (``ValueError`` otherwise: run the exploration again first). The exploration's verdict is kept
    as ``exploration_passed``; ``passed`` becomes the confirmation's.
    """
    if not os.path.exists(record_path):
        raise ValueError(f"no exploration record {record_path} to confirm: run the script without --confirm first")
    with open(record_path) as f:
        record = json.load(f)
    with open(confirmation_path) as f:
        confirmation = json.load(f)
    if record["code_version"] != confirmation["code_version"]:
        raise ValueError(
            f"{record_path} was written by {record['code_version']}, its confirmation by"
            f" {confirmation['code_version']}: run both from one clean commit"
        )
    config, confirmed = dict(record["config"]), dict(confirmation["config"])
    moved = {k[len("confirmation_") :] for k in config if k.startswith("confirmation_")}
    for k in moved:
        config.pop(k), confirmed.pop(k)
    if config != confirmed:
        raise ValueError(f"{record_path} and its confirmation differ in more than their seeds: run both again")
    record.pop("confirmation", None)
    record["exploration_passed"] = record.pop("exploration_passed", record["passed"])
    record["passed"] = bool(confirmation["passed"])
    kept = ("passed", "claims", "measured", "seconds")
    record["confirmation"] = {k: confirmation[k] for k in kept if k in confirmation}
    record["confirmation"]["seeds"] = {k: confirmation["config"][k] for k in sorted(moved)}
    record["confirmation"]["seed"] = confirmation["config"].get("seed")
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    print(
        f"{os.path.basename(record_path)}: exploration {'PASS' if record['exploration_passed'] else 'FAIL'},"
        f" confirmation {'PASS' if record['passed'] else 'FAIL'} (the verdict of record)",
        flush=True,
    )
    return record


def _short(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(_short(x)) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)
