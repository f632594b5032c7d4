"""One shared factor, a full personal other factor: FedRep, FedSA-LoRA (shared input side), ALoRA (output).

These are CoLoRA with one shared factor frozen at the identity: ``H_i V^T = I_{d_out} H_i V^T``
(the personal "S_i" is the d_out x r matrix ``H_i``) and ``B A_i = B A_i I_{d_in}^T``. So the
core's exact block steps (``personal_step``, ``input_step``, ``output_step``) are reused as they
are, for both measurement models, and ALoRA is FedSA-LoRA with the roles of the two sides
exchanged (exact for regression and sensing alike: the identity sits on the other side).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from colora_jax._src.baselines.common import MethodFit, finite, floor, iterate_fit, need_samples, record_fit
from colora_jax._src.estimators import fitting
from colora_jax._src.estimators.fitting import Trace
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, choice
from colora_jax._src.model.data import GroundTruth, Observations


def one_sided_fit(
    obs: Observations,
    config: FitConfig,
    *,
    shared: str = "input",
    gradient: bool = False,
    truth: GroundTruth | None = None,
) -> tuple[Float[Array, "d_out r"], Float[Array, "d_in r"], Float[Array, "k a b"], Trace]:
    """Alternating minimization with one shared side and a full personal other side.

    ``shared="input"``: ``W_i = H_i V^T`` (FedRep; FedSA-LoRA's shared A = V^T, personal
    B_i = H_i), written as CoLoRA with ``U = I_{d_out}`` and ``S_i = H_i`` (d_out x r).
    ``shared="output"``: ``W_i = U A_i`` (shared B = U, personal A_i), CoLoRA with
    ``V = I_{d_in}`` and ``S_i = A_i`` (r x d_in). One iteration:

    1. personal step (exact, per user): ``S_i = argmin ||y_i - A_i(U S_i V^T)||^2``;
    2. shared step, pooled over users: exact (``input_step`` / ``output_step``) or, with
       ``gradient=True``, one gradient step of size ``step_size / L`` with
       ``L = lambda_max(sum_i n_i S_i^T S_i)`` (FedRep's update of the representation, done
       with the full gradient; the isotropic-design Lipschitz bound as in ``altgd``);
    3. QR of the shared factor, its triangular factor absorbed into every ``S_i``.

    Initialization: the shared side of the core's second-moment ``spectral_init`` (FedRep's
    method-of-moments initialization when d_out = 1).

    Returns:
      ``(U, V, S, trace)``, with the identity in place of the side that is not shared.
    """
    config.validate()
    choice("shared", shared, ("input", "output"))
    d_out, d_in = obs.dims
    r = config.rank
    if r > (d_in if shared == "input" else d_out):
        raise ValueError(
            f"rank {r} exceeds the shared side's dimension {d_in if shared == 'input' else d_out}: lower the rank"
        )
    d = blocks.design(obs)
    n, dtype = d.counts, obs.X.dtype
    U0, V0 = blocks.spectral_init(d, r)  # only the shared side's is used (the other may be rank-deficient)
    U, V = (jnp.eye(d_out, dtype=dtype), V0) if shared == "input" else (U0, jnp.eye(d_in, dtype=dtype))
    params = (U, V, blocks.personal_step(d, U, V, False))

    def step(p):
        U, V, _ = p
        S = blocks.personal_step(d, U, V, False)
        if shared == "input":
            if gradient:
                L = jnp.linalg.eigvalsh(jnp.einsum("k,kor,kos->rs", n, S, S))[-1]
                V = V - (config.step_size / L) * jax.grad(lambda V_: 0.5 * blocks.sum_squares(d, U, V_, S))(V)
            else:
                V = blocks.input_step(d, U, S)
            V, S = fitting.normalize_V(V, S, False)
        else:
            if gradient:
                L = jnp.linalg.eigvalsh(jnp.einsum("k,kri,ksi->rs", n, S, S))[-1]
                U = U - (config.step_size / L) * jax.grad(lambda U_: 0.5 * blocks.sum_squares(d, U_, V, S))(U)
            else:
                U = blocks.output_step(d, V, S)
            U, S = fitting.normalize_U(U, S, False)
        return (U, V, S)

    def metrics_of(p):
        U, V, S = p
        W = jnp.einsum("or,krs,is->koi", U, S, V)
        return record_fit(obs, W, U if shared == "output" else None, V if shared == "input" else None, truth)

    (U, V, S), history, it, done = iterate_fit(step, params, metrics_of, config.iters, config.tol, floor(obs), True)
    return U, V, S, fitting.make_trace(history, it, done, finite(obs))


def _one_sided(obs, fc, truth, method: str, shared: str, gradient: bool) -> MethodFit:
    d_out, d_in = obs.dims
    if shared == "input":
        need_samples(obs, d_out, fc.rank, method)
    else:
        need_samples(obs, fc.rank, d_in, method)
    U, V, S, trace = one_sided_fit(obs, fc, shared=shared, gradient=gradient, truth=truth)
    W = jnp.einsum("or,krs,is->koi", U, S, V)
    return MethodFit(W, U if shared == "output" else None, V if shared == "input" else None, trace)


def fit_fedrep(obs, fc, *, key=None, truth=None) -> MethodFit:
    """FedRep: exact personal heads ``H_i``, a gradient step on the shared representation ``V``."""
    return _one_sided(obs, fc, truth, "fedrep", "input", gradient=True)


def fit_fedsa_lora(obs, fc, *, key=None, truth=None) -> MethodFit:
    """FedSA-LoRA: shared ``A = V^T`` (exact pooled step), personal ``B_i`` (exact)."""
    return _one_sided(obs, fc, truth, "fedsa-lora", "input", gradient=False)


def fit_alora(obs, fc, *, key=None, truth=None) -> MethodFit:
    """ALoRA: shared ``B = U`` (exact pooled step), personal ``A_i`` (exact)."""
    return _one_sided(obs, fc, truth, "alora", "output", gradient=False)
