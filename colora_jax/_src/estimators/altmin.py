"""Exact alternating minimization (``algorithm="altmin"``).

One iteration: personal step (exact, per user) -> output step (exact, pooled) -> QR of U ->
input step (exact, pooled) -> QR of V (``altmin_body``). The triangular factors of the QRs are absorbed into
every ``S_i`` (``U S V^T = Q_U (R_U S R_V^T) Q_V^T``, ``fitting.normalize_U``/``normalize_V``),
so no step changes any ``W_i`` except by minimizing: the objective never increases. With a
diagonal personal part the gauge is diagonal, so columns are normalized instead of QR'd.
"""

from __future__ import annotations

from colora_jax._src.estimators.fitting import Estimate, Setup, fit_by_steps, normalize_U, normalize_V
from colora_jax._src.model import blocks


def altmin_body(d: blocks.Design, U, V, diag: bool, axis_name=None):
    """One AltMin iteration from ``(U, V)``: the current iterate and its objective, then the next ``(U, V)``.

    The current iterate is ``(U, V, S)`` with ``S`` the exact personal step at ``(U, V)``; its
    pass over the data (``V^T C_i V`` and ``Bt_i V``, or ``X_ij V``) also gives the output step's
    normal equations and (sensing) the residuals of the objective. The objective is always
    computed from raw residuals (so noiseless float64 fits reach 1e-15, below what sufficient
    statistics resolve). Then the output step (U, QR) and the input step (V, QR), both exact.

    Returns:
      ``(Estimate(U, V, S), sum of squared residuals of that estimate, (U', V'))``.
    """
    S, (G, H), sse = blocks.personal_output_and_objective(d, U, V, diag, axis_name)
    current = Estimate(U, V, S)
    U2 = blocks.solve_factor(blocks.pool(G, axis_name), blocks.pool(H, axis_name), S.shape[1])
    U2, S2 = normalize_U(U2, S, diag)
    V2, _ = normalize_V(blocks.input_step(d, U2, S2, axis_name), S2, diag)
    return current, sse, (U2, V2)


def make_body(s: Setup, config, optimizer, axis_name):
    """``(body, params0)`` of ``altmin`` for ``fitting.iterate``: ``altmin_body`` from ``(U, V)``."""
    diag = config.personal == "diag"
    return (lambda p: altmin_body(s.design, *p, diag, axis_name)), (s.U, s.V)


def fit_altmin(observations, config, *, key=None, truth=None, optimizer=None, axis_name=None):
    """``fit`` with ``algorithm="altmin"`` (see the module docstring)."""
    return fit_by_steps(make_body, observations, config, key=key, truth=truth, axis_name=axis_name)
