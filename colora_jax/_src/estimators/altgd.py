"""Alternating gradient descent (``AltGD``, registered as ``"altgd"``): exact personal step, gradient steps on U, V.

FedRep's scheme (Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021): every iteration solves each user's ``S_i`` exactly, then takes one
gradient step on ``U`` and one on ``V`` of size ``step_size / L`` with the isotropic-design
Lipschitz bounds ``L_U = lambda_max(sum_i n_i S_i S_i^T)``, ``L_V = lambda_max(sum_i n_i S_i^T S_i)``.
No pooled ``(d r) x (d r)`` system is formed, so it scales to large d.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from colora_jax._src.estimators.fitting import Estimate, Estimator, normalize_U, normalize_V
from colora_jax._src.model import blocks
from colora_jax._src.model.config import check_positive


def _lambda_max(M):
    return jnp.linalg.eigvalsh(M)[-1]


@dataclasses.dataclass(frozen=True)
class AltGD(Estimator):
    """Exact personal step, one gradient step on U and on V (FedRep's scheme); no ``(d r)^2`` system."""

    step_size: float = 0.5  # the step is step_size / L (isotropic-design Lipschitz bound)

    def check(self, config):
        """``step_size`` a finite number > 0."""
        check_positive("AltGD", "step_size", self.step_size)

    def configured(self, config):
        """``FitConfig.step_size`` as this step size."""
        return dataclasses.replace(self, step_size=config.step_size)

    def step(self, params, s, config, users):
        """Exact S-step, then a gradient step on U and one on V (each re-orthonormalized)."""
        U, V = params
        diag = config.personal == "diag"

        def personal(d, _):
            S, _, sse = blocks.personal_output_and_objective(d, U, V, diag)
            return (sse, jnp.einsum("k,krs,kts->rt", d.counts, S, S)), S

        (sse, NU), S = users.sum(personal)
        half_sse = lambda d, U_, V_, S_: 0.5 * blocks.sum_squares(d, U_, V_, S_)
        gU, _ = users.sum(lambda d, S_: (jax.grad(half_sse, 1)(d, users.local(U), V, S_), None), S)
        U2 = U - (self.step_size / _lambda_max(NU)) * gU
        U2, S2 = normalize_U(U2, S, diag)

        def input_part(d, S_):
            grad = jax.grad(half_sse, 2)(d, U2, users.local(V), S_)
            return (jnp.einsum("k,ksr,kst->rt", d.counts, S_, S_), grad), None

        (NV, gV), _ = users.sum(input_part, S2)
        V2 = V - (self.step_size / _lambda_max(NV)) * gV
        V2, _ = normalize_V(V2, S2, diag)
        return Estimate(U, V, S), sse, (U2, V2)
