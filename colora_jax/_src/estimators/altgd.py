"""Alternating gradient descent (``algorithm="altgd"``): exact personal step, gradient steps on U, V.

FedRep's scheme (Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021): every iteration solves each user's ``S_i`` exactly, then takes one
gradient step on ``U`` and one on ``V`` of size ``step_size / L`` with the isotropic-design
Lipschitz bounds ``L_U = lambda_max(sum_i n_i S_i S_i^T)``, ``L_V = lambda_max(sum_i n_i S_i^T S_i)``.
No pooled ``(d r) x (d r)`` system is formed, so it scales to large d.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from colora_jax._src.estimators.fitting import Estimate, Setup, fit_by_steps, normalize_U, normalize_V
from colora_jax._src.model import blocks


def _lambda_max(M):
    return jnp.linalg.eigvalsh(M)[-1]


def make_body(s: Setup, config, optimizer, axis_name):
    """``(body, params0)`` of ``altgd`` for ``fitting.iterate``: exact S-step, gradient steps on U and V."""
    d, diag, n = s.design, config.personal == "diag", s.design.counts

    def body(params):
        U, V = params
        S, _, sse = blocks.personal_output_and_objective(d, U, V, diag, axis_name)
        half_sse = lambda U_, V_: 0.5 * blocks.sum_squares(d, U_, V_, S, axis_name)
        L_U = _lambda_max(blocks.pool(jnp.einsum("k,krs,kts->rt", n, S, S), axis_name))
        U2 = U - (config.step_size / L_U) * jax.grad(half_sse, 0)(U, V)
        U2, S2 = normalize_U(U2, S, diag)
        L_V = _lambda_max(blocks.pool(jnp.einsum("k,ksr,kst->rt", n, S2, S2), axis_name))
        V2 = V - (config.step_size / L_V) * jax.grad(half_sse, 1)(U2, V)
        V2, _ = normalize_V(V2, S2, diag)
        return Estimate(U, V, S), sse, (U2, V2)

    return body, (s.U, s.V)


def fit_altgd(observations, config, *, key=None, truth=None, optimizer=None, axis_name=None):
    """``fit`` with ``algorithm="altgd"`` (see the module docstring)."""
    return fit_by_steps(make_body, observations, config, key=key, truth=truth, axis_name=axis_name)
