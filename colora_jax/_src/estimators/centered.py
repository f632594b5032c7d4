"""Centred CoLoRA: personal parts pulled towards a shared centre (``Centered``, registered as ``"centered"``).

When the personal signal is weak, CoLoRA's ``r^2`` numbers per user can overfit. The natural
extension writes ``S_i = S_bar + Delta_i`` with a shared centre ``S_bar`` and penalizes the
deviations, in weight space so that the gauge does not matter::

    f_lambda(U, V, S, S_bar) = sum_ij ||y_ij - A_ij(U S_i V^T)||^2 + lambda sum_i n_i ||U (S_i - S_bar) V^T||_F^2.

It nests the two extremes: ``lambda = 0`` is CoLoRA (the centre drops out) and ``lambda -> inf``
is one shared rank-r adapter ``U S_bar V^T`` for everybody (the ``global`` baseline). The
penalty is the one of the NNX path (``colora_jax.nnx``, ``TrainConfig.ridge``): per sample,
``lambda`` times the mean over users of ``||U Delta_i V^T||_F^2``.

Exact alternating minimization, every block a closed form (so ``f_lambda`` never increases);
``U`` and ``V`` are kept orthonormal, so ``||U Delta_i V^T||_F = ||Delta_i||_F`` in the personal
and centre steps:

* personal and centre step, jointly: every ``S_i`` is a ridge regression towards the centre,
  ``(F_i^T F_i + w_i I) s_i = F_i^T y_i + w_i s_bar`` (sensing; regression: ``S_i (V^T C_i V +
  w_i I) = U^T B_i^T V + w_i S_bar``), ``w_i = lambda n_i``, and the centre solves the reduced
  system left after eliminating them (``Centered.step``);
* output step: the pooled least squares for ``U`` plus ``lambda sum_i n_i Delta_i Delta_i^T``
  (each row of ``U``), then QR with ``R`` absorbed into every ``S_i`` and ``S_bar``;
* input step: likewise for ``V`` with ``lambda sum_i n_i Delta_i^T Delta_i``, then QR.

The method ``colora-centered`` (``baselines/centered.py``) chooses ``lambda`` on held-out
validation data, with a traced ``Centered(ridge=lambda)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from colora_jax._src.estimators.fitting import Estimate, Estimator, normalize_U, normalize_V
from colora_jax._src.model import blocks
from colora_jax._src.model.config import check_real
from colora_jax._src.model.linalg import psd_solve


def _personal_solves(d: blocks.Design, U, V, weights):
    """Per user: ``A_i^{-1}`` (``A_i = G_i + w_i I``), the Gram ``G_i`` and the right-hand side ``b_i``.

    Regression, row by row: ``G_i = V^T C_i V``, ``b_i = R_i = U^T Bt_i V`` (``r x r``); sensing:
    ``G_i = F_i^T F_i``, ``b_i = F_i^T y_i`` over the ``r^2`` entries of ``S_i``. Also what the
    output step reuses: ``(V^T C_i V, Bt_i V)`` or ``(X_ij V, U^T X_ij V)``.
    """
    r = U.shape[1]
    if d.model == "regression":
        VCV, BtV = blocks.regression_projections(d, V)
        R = jnp.einsum("or,kos->krs", U, BtV)
        eye = jnp.eye(r, dtype=U.dtype)
        A_inv = jax.vmap(lambda N, w: psd_solve(N + w * eye, eye))(VCV, weights)
        return A_inv, VCV, R, (VCV, BtV)
    XV = d.X @ V
    core = blocks.sensing_core(XV, U)
    F = core.reshape(core.shape[:2] + (r * r,))
    G = jnp.einsum("knp,knq->kpq", F, F)
    b = jnp.einsum("knp,kn->kp", F, d.Y)
    eye = jnp.eye(r * r, dtype=U.dtype)
    A_inv = jax.vmap(lambda G_, w: psd_solve(G_ + w * eye, eye))(G, weights)
    return A_inv, G, b, (XV, core)


def _centre_normal(d: blocks.Design, A_inv, G, b, weights):
    """These users' part of the centre's reduced system: ``sum_i w_i A_i^{-1} G_i`` and ``sum_i w_i A_i^{-1} b_i``."""
    if d.model == "regression":
        M = jnp.einsum("k,kab,kbc->ac", weights, A_inv, G)
        return M, jnp.einsum("k,kab,kcb->ac", weights, A_inv, b)  # sum_i w_i A_i^{-1} R_i^T
    return jnp.einsum("k,kpq,kqs->ps", weights, A_inv, G), jnp.einsum("k,kpq,kq->p", weights, A_inv, b)


def _personal(d: blocks.Design, A_inv, b, weights, centre, r: int):
    """Every ``S_i``: the ridge towards the centre, ``A_i s_i = b_i + w_i s_bar`` (regression: row by row)."""
    if d.model == "regression":
        return jnp.einsum("krs,kst->krt", b + weights[:, None, None] * centre[None], A_inv)
    S = jnp.einsum("kpq,kq->kp", A_inv, b + weights[:, None] * centre.reshape(-1)[None])
    return S.reshape(-1, r, r)


@dataclasses.dataclass(frozen=True)
class Centered(Estimator):
    """Exact alternating minimization, ``S_i`` pulled to a centre: ``+ ridge sum_i n_i ||U (S_i - S_bar) V^T||^2``."""

    ridge: Any = 0.0  # lambda (0: plain CoLoRA); a traced value is allowed when the object is not a jit argument

    def check(self, config):
        """Full personal parts and (when concrete) a finite ``ridge >= 0``."""
        if config.personal != "full":
            raise ValueError("the centred estimator pulls full r x r personal parts to a centre: use personal='full'")
        if not isinstance(self.ridge, jax.core.Tracer):
            check_real("Centered", "ridge", self.ridge)
            if not self.ridge >= 0:
                raise ValueError(f"ridge must be >= 0 (0: plain CoLoRA), got {self.ridge}")

    def configured(self, config):
        """``FitConfig.ridge`` as lambda."""
        return dataclasses.replace(self, ridge=config.ridge)

    def in_units(self, x_exponent):
        """The penalty ``lambda n_i ||U Delta_i V^T||^2`` is on the caller's ``W``: ``lambda 2^(-2 x_exponent)``."""
        return dataclasses.replace(self, ridge=float(self.ridge) * 2.0 ** (-2 * x_exponent)) if self.ridge else self

    def step(self, params, s, config, users):
        """One iteration from ``(U, V)``: the current iterate, its penalized objective, the next ``(U, V)``.

        The personal and centre step is solved jointly (not ``S_i`` and ``S_bar`` in turn), so a
        large ``lambda`` cannot freeze the centre: eliminating the ``s_i`` leaves ``(sum_i w_i
        A_i^{-1} G_i) s_bar = sum_i w_i A_i^{-1} b_i`` (one sum over users), then ``s_i`` follows.
        """
        U, V = params
        ridge = jnp.asarray(self.ridge, U.dtype)
        d_out, d_in, r = U.shape[0], V.shape[0], U.shape[1]

        def centre_part(d, _):
            weights = ridge * d.counts
            A_inv, G, b, _ = _personal_solves(d, U, V, weights)
            return _centre_normal(d, A_inv, G, b, weights), None

        (M, rhs), _ = users.sum(centre_part)
        centre = psd_solve(M, rhs)
        centre = centre.T if centre.ndim == 2 else centre.reshape(r, r)

        def personal_part(d, _):
            weights = ridge * d.counts
            A_inv, _, b, pass_ = _personal_solves(d, U, V, weights)
            S = _personal(d, A_inv, b, weights, centre, r)
            if d.model == "regression":
                VCV, BtV = pass_
                sse = blocks.sum_squares(d, U, V, S)
                normal = blocks.output_normal_regression(VCV, BtV, S)
            else:
                XV, core = pass_
                sse = jnp.sum(jnp.square(d.Y - jnp.einsum("knrs,krs->kn", core, S)))
                normal = blocks.factor_normal(XV, d.Y, S)
            delta = S - centre[None]
            penalty = jnp.sum(weights * jnp.sum(jnp.square(delta), axis=(1, 2)))
            M_U = jnp.einsum("k,kab,kcb->ac", weights, delta, delta)  # sum_i w_i Delta_i Delta_i^T
            return (sse, penalty, normal, M_U), S

        (sse, penalty, (G, H), M_U), S = users.sum(personal_part)
        objective = sse + penalty
        current = Estimate(U, V, S)
        G = G + (M_U if users.layout.model == "regression" else jnp.kron(jnp.eye(d_out, dtype=U.dtype), M_U))
        U2 = blocks.solve_factor(G, H, r)
        U2, SC = normalize_U(U2, jnp.concatenate([S, centre[None]]), False)
        S, centre = SC[:-1], SC[-1]

        def input_part(d, S_):
            delta = S_ - centre[None]
            M_V = jnp.einsum("k,kba,kbc->ac", ridge * d.counts, delta, delta)  # sum_i w_i Delta_i^T Delta_i
            return (blocks.input_normal(d, U2, S_), M_V), None

        ((K, h), M_V), _ = users.sum(input_part, S)
        K = K + jnp.kron(jnp.eye(d_in, dtype=U.dtype), M_V)
        V2, _ = normalize_V(blocks.solve_factor(K, h, r), S, False)
        return current, objective, (U2, V2)
