"""Exact alternating minimization (``AltMin``, registered as ``"altmin"``).

One iteration: personal step (exact, per user) -> output step (exact, pooled) -> QR of U ->
input step (exact, pooled) -> QR of V. The triangular factors of the QRs are absorbed into
every ``S_i`` (``U S V^T = Q_U (R_U S R_V^T) Q_V^T``, ``fitting.normalize_U``/``normalize_V``),
so no step changes any ``W_i`` except by minimizing: the objective never increases. With a
diagonal personal part the gauge is diagonal, so columns are normalized instead of QR'd.
"""

from __future__ import annotations

import dataclasses

from colora_jax._src.estimators.fitting import Estimate, Estimator, normalize_U, normalize_V
from colora_jax._src.model import blocks


@dataclasses.dataclass(frozen=True)
class AltMin(Estimator):
    """Exact alternating minimization: per-user ``r^2`` least squares, pooled U and V least squares."""

    def step(self, params, s, config, users):
        """One AltMin iteration from ``(U, V)``: the current iterate and its objective, then the next ``(U, V)``.

        The current iterate is ``(U, V, S)`` with ``S`` the exact personal step at ``(U, V)``; its
        pass over the data (``V^T C_i V`` and ``Bt_i V``, or ``X_ij V``) also gives the output
        step's normal equations and (sensing) the residuals of the objective. The objective is
        always computed from raw residuals (so noiseless float64 fits reach 1e-15, below what
        sufficient statistics resolve). Then the output step (U, QR) and the input step (V, QR).
        """
        U, V = params
        diag = config.personal == "diag"

        def personal(d, _):
            S, normal, sse = blocks.personal_output_and_objective(d, U, V, diag)
            return (normal, sse), S

        ((G, H), sse), S = users.sum(personal)
        U2, S2 = normalize_U(blocks.solve_factor(G, H, S.shape[1]), S, diag)
        (K, h), _ = users.sum(lambda d, S_: (blocks.input_normal(d, U2, S_), None), S2)
        V2, _ = normalize_V(blocks.solve_factor(K, h, S.shape[-1]), S2, diag)
        return Estimate(U, V, S), sse, (U2, V2)
