"""One registry of estimators (algorithms for the CoLoRA model) and methods (the baselines too).

Everything that lists algorithms or methods reads these two tables: ``fit`` dispatches on
``FitConfig.algorithm``; ``fit_method``, ``colora compare``, the sweep harness and the CLI
choices read ``METHODS``; the NNX training harness uses the same method names; the docs tables
are generated from them (``colora methods --write``; a test keeps docs/ in step).

Adding an estimator or a baseline is one new module plus one entry below. An entry names its
function as ``"module:function"`` and is resolved on first use, so this module imports nothing
(every estimator module may import the layers below it without a cycle). ``colora methods``
prints the tables; ``colora methods --write docs/baselines.md`` refreshes the docs.

Parameter counts are written with ``o = d_out``, ``i = d_in``, ``r = rank`` and ``p``, the size
of the truth's personal part (``r^2``, ``r`` when diagonal, ``d_out r`` for a shared-input
problem).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """An estimator of the CoLoRA model ``U S_i V^T`` (``FitConfig.algorithm``)."""

    name: str
    target: str  # "module:function", called as fit(observations, config, *, key, truth, optimizer, axis_name)
    description: str  # one line, for --help and the docs table
    first_stage: str | None = None  # an algorithm whose fit this one returns unchanged wherever that fit is
    #   exact (reaches the stopping floor): the trial driver runs it on every trial, then this one only on
    #   the others, in a smaller batch (trials.SplitFit), so a hard trial does not hold the whole batch

    @property
    def fit(self) -> Callable:
        """The fit function, imported when first asked for."""
        return _resolve(self.target)


@dataclasses.dataclass(frozen=True)
class Method:
    """A method that estimates every user's ``W_i`` (CoLoRA itself or a baseline)."""

    name: str
    target: str  # "module:function", called as fit(observations, fit_config, *, key, truth, **options) -> MethodFit
    description: str  # one line: the model of user i and how it is fitted
    shared: str  # which shared factors it estimates: "U,V", "U", "V" or "" (scored against U*, V*)
    counts: Callable[[int, int, int, int], tuple[int, int]]  # (o, i, r, p) -> (params shared, params per user)
    family: str  # the module family it belongs to (docs grouping)
    needs_truth: bool = False  # the oracle: fitted with the truth's U*, V*
    nnx: str | None = None  # "module:function" training the method on an NNX model (colora_jax.nnx), if any

    @property
    def fit(self) -> Callable:
        """The fit function, imported when first asked for."""
        return _resolve(self.target)

    @property
    def nnx_fit(self) -> Callable:
        """The NNX harness's fit function (ValueError for a method without one)."""
        if self.nnx is None:
            raise ValueError(f"method {self.name!r} has no NNX implementation")
        return _resolve(self.nnx)


@functools.cache
def _resolve(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


_PKG = "colora_jax._src"
_NNX = "colora_jax.nnx._train"

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "altmin",
            f"{_PKG}.altmin:fit_altmin",
            "exact alternating minimization: per-user r^2 least squares, pooled U and V least squares",
        ),
        Algorithm(
            "altgd",
            f"{_PKG}.altgd:fit_altgd",
            "exact personal step, one gradient step on U and on V (FedRep's scheme); no (d r)^2 system",
        ),
        Algorithm(
            "adam",
            f"{_PKG}.joint:fit_joint",
            "joint first-order training of U, V and every S_i with optax (adam by default), as LoRA is trained",
        ),
        Algorithm(
            "varpro",
            f"{_PKG}.varpro:fit_varpro",
            "variable projection: Levenberg-Marquardt on U, V with every S_i eliminated exactly",
        ),
        Algorithm(
            "varpro-plain",
            f"{_PKG}.varpro:fit_varpro_plain",
            "varpro without the ridge continuation (the first fit of varpro's fallback)",
        ),
        Algorithm(
            "varpro-restarts",
            f"{_PKG}.varpro:fit_varpro_restarts",
            "varpro, then keyed random restarts only while no fit is exact (on noiseless data a fit above"
            " the stopping floor is a spurious stationary point); the lowest objective wins",
            first_stage="varpro-plain",
        ),
        Algorithm(
            "centered",
            f"{_PKG}.centered:fit_centered",
            "exact alternating minimization with S_i pulled to a shared centre:"
            " + ridge sum_i n_i ||U (S_i - S_bar) V^T||^2",
        ),
        Algorithm(
            "gnmr",
            f"{_PKG}.gnmr:fit_gnmr",
            "GNMR (Zilber-Nadler): one undamped Gauss-Newton least squares in (U, V, S_i) per iteration,"
            " its min-norm solution (setting variant); S_i eliminated by a Schur complement",
        ),
        Algorithm(
            "scaledgd",
            f"{_PKG}.scaledgd:fit_scaledgd",
            "ScaledGD (Tong-Ma-Chi): simultaneous gradient steps on U, V, S_i, each preconditioned by the"
            " inverse Gram of the other factors; eta = step_size",
        ),
    )
}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "colora",
            f"{_PKG}.baselines.colora:fit_colora",
            "U S_i V^T, S_i r x r: fit with FitConfig.algorithm",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r * r),
            "colora",
            nnx=f"{_NNX}:train_colora",
        ),
        Method(
            "colora-diag",
            f"{_PKG}.baselines.colora:fit_colora_diag",
            "U S_i V^T, S_i diagonal: fit with FitConfig.algorithm",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r),
            "colora",
        ),
        Method(
            "colora-varpro",
            f"{_PKG}.baselines.colora:fit_colora_varpro",
            "U S_i V^T, S_i r x r: variable projection (algorithm varpro)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r * r),
            "colora",
        ),
        Method(
            "colora-centered",
            f"{_PKG}.centered:fit_colora_centered",
            "U (S_bar + Delta_i) V^T, ||Delta_i|| penalized,"
            " lambda chosen on held-out samples (0: colora, inf: global)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r + r * r, r * r),
            "colora",
            nnx=f"{_NNX}:train_centered",
        ),
        Method(
            "local",
            f"{_PKG}.baselines.local:fit_local",
            "U_i S_i V_i^T, each user's own LoRA: fit on each user alone",
            "",
            lambda o, i, r, p: (0, (o + i) * r),
            "local",
            nnx=f"{_NNX}:train_local",
        ),
        Method(
            "local-full",
            f"{_PKG}.baselines.local:fit_local_full",
            "any W_i: per-user min-norm least squares",
            "",
            lambda o, i, r, p: (0, o * i),
            "local",
        ),
        Method(
            "global",
            f"{_PKG}.baselines.pooled:fit_global",
            "U S V^T for everybody: one adapter fitted on all users' data pooled",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, 0),
            "pooled",
            nnx=f"{_NNX}:train_global",
        ),
        Method(
            "fedrep",
            f"{_PKG}.baselines.one_sided:fit_fedrep",
            "H_i V^T, H_i d_out x r: exact personal H_i, gradient step on V (FedRep)",
            "V",
            lambda o, i, r, p: (i * r, o * r),
            "one_sided",
        ),
        Method(
            "fedsa-lora",
            f"{_PKG}.baselines.one_sided:fit_fedsa_lora",
            "B_i A, A shared: exact personal B_i, exact pooled step on A (FedSA-LoRA)",
            "V",
            lambda o, i, r, p: (i * r, o * r),
            "one_sided",
        ),
        Method(
            "alora",
            f"{_PKG}.baselines.one_sided:fit_alora",
            "B A_i, B shared: exact personal A_i, exact pooled step on B",
            "U",
            lambda o, i, r, p: (o * r, i * r),
            "one_sided",
        ),
        Method(
            "fedavg-lora",
            f"{_PKG}.baselines.federated:fit_fedavg_lora",
            "B A then fine-tuned: FedAvg of (A, B) with local steps, then per-user fine-tuning",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, (o + i) * r),
            "federated",
            nnx=f"{_NNX}:train_fedavg",
        ),
        Method(
            "ffa-lora",
            f"{_PKG}.baselines.federated:fit_ffa_lora",
            "B A0, A0 frozen random: FedAvg of B with local steps, then fine-tuning of B (FFA-LoRA)",
            "U,V",
            lambda o, i, r, p: (o * r, o * r),
            "federated",
        ),
        Method(
            "oracle",
            f"{_PKG}.baselines.references:fit_oracle",
            "U* S_i V*^T: only S_i fitted, the truth's U*, V* given",
            "U,V",
            lambda o, i, r, p: (0, p),
            "references",
            needs_truth=True,
        ),
        Method(
            "colora-diag-span",
            f"{_PKG}.baselines.references:fit_diag_span_start",
            "U S_i V^T, S_i diagonal: AltMin started in span U*, span V* with a random basis (reads the truth)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r),
            "references",
            needs_truth=True,
        ),
        Method(
            "base",
            f"{_PKG}.baselines.references:fit_base",
            "W_0: the frozen base, nothing adapted (W_i = 0 here)",
            "",
            lambda o, i, r, p: (0, 0),
            "references",
            nnx=f"{_NNX}:train_base",
        ),
    )
}


def algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; ValueError listing the known ones otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def method(name: str) -> Method:
    """The method called ``name``; ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def markdown_tables() -> str:
    """The docs tables of algorithms and methods (what ``colora methods`` prints)."""
    lines = ["| algorithm | what it does |", "|---|---|"]
    lines += [f"| `{a.name}` | {a.description} |" for a in ALGORITHMS.values()]
    lines += [
        "",
        "| method | model of user i and how it is fitted | shared factors | params shared | params per user | NNX |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS.values():
        shared, per_user = (_formula(m.counts, k) for k in (0, 1))
        nnx = "yes" if m.nnx else "-"
        lines.append(f"| `{m.name}` | {m.description} | {m.shared or '-'} | {shared} | {per_user} | {nnx} |")
    return "\n".join(lines)


def _formula(counts, which: int) -> str:
    """A parameter count written back as a formula in o, i, r, p (evaluated at distinct primes)."""
    o, i, r, p = 1009, 1013, 7, 3
    value = counts(o, i, r, p)[which]
    for text, v in (
        ("0", 0),
        ("(o + i) r", (o + i) * r),
        ("(o + i) r + r^2", (o + i) * r + r * r),
        ("r^2", r * r),
        ("r", r),
        ("o i", o * i),
        ("i r", i * r),
        ("o r", o * r),
        ("p", p),
    ):
        if value == v:
            return text
    raise ValueError(f"no formula for parameter count {value}")


BEGIN, END = "<!-- registry:begin -->", "<!-- registry:end -->"


def replace_tables(text: str) -> str:
    """``text`` (markdown) with the part between the registry markers replaced by ``markdown_tables()``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} markers in the file: add them where the tables go")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_tables()}\n{END}{tail}"
