"""The methods (CoLoRA itself and the baselines) by name: one table every caller reads.

``METHODS`` maps each name to its fit function by a real import, with its parameter counts and a
description; ``fit_method``, ``colora compare``, the sweep harness and the CLI choices read it,
and the docs tables are generated from it and from ``ALGORITHMS`` (``colora methods --write``; a
test keeps docs/ in step). The algorithms (``FitConfig.algorithm``) are the floor below
(``algorithms.py``, re-exported here); the NNX harness keeps its own map from these method names
to its trainers (``colora_jax.nnx``), so the arrows point from the NNX path to this one.

Adding a baseline is one new module in ``baselines/`` plus one entry below. ``colora methods``
prints the tables; ``colora methods --write docs/baselines.md`` refreshes the docs.

Parameter counts are written with ``o = d_out``, ``i = d_in``, ``r = rank`` and ``p``, the size
of the truth's personal part (``r^2``, ``r`` when diagonal, ``d_out r`` for a shared-input
problem).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

from colora_jax._src.algorithms import ALGORITHMS as ALGORITHMS
from colora_jax._src.algorithms import Algorithm as Algorithm
from colora_jax._src.algorithms import algorithm as algorithm
from colora_jax._src.baselines.centered import fit_colora_centered
from colora_jax._src.baselines.colora import fit_colora, fit_colora_diag, fit_colora_varpro
from colora_jax._src.baselines.federated import fit_fedavg_lora, fit_ffa_lora
from colora_jax._src.baselines.local import fit_local, fit_local_full
from colora_jax._src.baselines.one_sided import fit_alora, fit_fedrep, fit_fedsa_lora
from colora_jax._src.baselines.pooled import fit_global
from colora_jax._src.baselines.references import fit_base, fit_diag_span_start, fit_oracle


@dataclasses.dataclass(frozen=True)
class Method:
    """A method that estimates every user's ``W_i`` (CoLoRA itself or a baseline)."""

    name: str
    fit: Callable  # called as fit(observations, fit_config, *, key, truth, **options) -> MethodFit
    description: str  # one line: the model of user i and how it is fitted
    shared: str  # which shared factors it estimates: "U,V", "U", "V" or "" (scored against U*, V*)
    counts: Callable[[int, int, int, int], tuple[int, int]]  # (o, i, r, p) -> (params shared, params per user)
    family: str  # the module family it belongs to (docs grouping)
    needs_truth: bool = False  # the oracle: fitted with the truth's U*, V*


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "colora",
            fit_colora,
            "U S_i V^T, S_i r x r: fit with FitConfig.algorithm",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r * r),
            "colora",
        ),
        Method(
            "colora-diag",
            fit_colora_diag,
            "U S_i V^T, S_i diagonal: fit with FitConfig.algorithm",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r),
            "colora",
        ),
        Method(
            "colora-varpro",
            fit_colora_varpro,
            "U S_i V^T, S_i r x r: variable projection (algorithm varpro)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r * r),
            "colora",
        ),
        Method(
            "colora-centered",
            fit_colora_centered,
            "U (S_bar + Delta_i) V^T, ||Delta_i|| penalized,"
            " lambda chosen on held-out samples (0: colora, inf: global)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r + r * r, r * r),
            "colora",
        ),
        Method(
            "local",
            fit_local,
            "U_i S_i V_i^T, each user's own LoRA: fit on each user alone",
            "",
            lambda o, i, r, p: (0, (o + i) * r),
            "local",
        ),
        Method(
            "local-full",
            fit_local_full,
            "any W_i: per-user min-norm least squares",
            "",
            lambda o, i, r, p: (0, o * i),
            "local",
        ),
        Method(
            "global",
            fit_global,
            "U S V^T for everybody: one adapter fitted on all users' data pooled",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, 0),
            "pooled",
        ),
        Method(
            "fedrep",
            fit_fedrep,
            "H_i V^T, H_i d_out x r: exact personal H_i, gradient step on V (FedRep)",
            "V",
            lambda o, i, r, p: (i * r, o * r),
            "one_sided",
        ),
        Method(
            "fedsa-lora",
            fit_fedsa_lora,
            "B_i A, A shared: exact personal B_i, exact pooled step on A (FedSA-LoRA)",
            "V",
            lambda o, i, r, p: (i * r, o * r),
            "one_sided",
        ),
        Method(
            "alora",
            fit_alora,
            "B A_i, B shared: exact personal A_i, exact pooled step on B",
            "U",
            lambda o, i, r, p: (o * r, i * r),
            "one_sided",
        ),
        Method(
            "fedavg-lora",
            fit_fedavg_lora,
            "B A then fine-tuned: FedAvg of (A, B) with local steps, then per-user fine-tuning",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, (o + i) * r),
            "federated",
        ),
        Method(
            "ffa-lora",
            fit_ffa_lora,
            "B A0, A0 frozen random: FedAvg of B with local steps, then fine-tuning of B (FFA-LoRA)",
            "U,V",
            lambda o, i, r, p: (o * r, o * r),
            "federated",
        ),
        Method(
            "oracle",
            fit_oracle,
            "U* S_i V*^T: only S_i fitted, the truth's U*, V* given",
            "U,V",
            lambda o, i, r, p: (0, p),
            "references",
            needs_truth=True,
        ),
        Method(
            "colora-diag-span",
            fit_diag_span_start,
            "U S_i V^T, S_i diagonal: AltMin started in span U*, span V* with a random basis (reads the truth)",
            "U,V",
            lambda o, i, r, p: ((o + i) * r, r),
            "references",
            needs_truth=True,
        ),
        Method(
            "base",
            fit_base,
            "W_0: the frozen base, nothing adapted (W_i = 0 here)",
            "",
            lambda o, i, r, p: (0, 0),
            "references",
        ),
    )
}


def method(name: str) -> Method:
    """The method called ``name``; ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def markdown_tables(nnx: Collection[str] = ()) -> str:
    """The docs tables of algorithms and methods (what ``colora methods`` prints).

    ``nnx``: the methods with an NNX trainer (``colora_jax.nnx.METHOD_NAMES``), marked in their column.
    """
    lines = ["| algorithm | what it does |", "|---|---|"]
    lines += [f"| `{a.name}` | {a.description} |" for a in ALGORITHMS.values()]
    lines += [
        "",
        "| method | model of user i and how it is fitted | shared factors | params shared | params per user | NNX |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS.values():
        shared, per_user = (_formula(m.counts, k) for k in (0, 1))
        has = "yes" if m.name in nnx else "-"
        lines.append(f"| `{m.name}` | {m.description} | {m.shared or '-'} | {shared} | {per_user} | {has} |")
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


def replace_tables(text: str, nnx: Collection[str] = ()) -> str:
    """``text`` (markdown) with the part between the registry markers replaced by ``markdown_tables(nnx)``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} markers in the file: add them where the tables go")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_tables(nnx)}\n{END}{tail}"
