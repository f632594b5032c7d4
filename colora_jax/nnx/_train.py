"""Multi-user training of adapted NNX models, and the baselines in the same harness.

Every optimizer step draws a *mixed-user* mini-batch (examples of many users together) and
minimizes the mean per-example loss. Which parameters move is chosen by marker type:

- ``joint``: ``SharedParam`` and ``PersonalParam`` together;
- ``alternating``: ``personal_steps`` steps on ``PersonalParam``, then ``shared_steps`` on
  ``SharedParam``, repeated (the gradient analogue of AltMin's S-step / U,V-step);
- ``federated``: rounds; users are split into ``groups`` (clients); each group starts from the
  global adapter, takes ``local_steps`` on its own users' data, then the shared factors are
  averaged across groups (weighted by their number of examples) and each user's personal rows
  are kept from the group that owns that user;
- ``shared`` / ``personal``: one part only (a shared LoRA; fitting new users on a frozen U, V).

Methods (:data:`METHODS`, the project's spellings), all fitted on the same data by
:func:`fit_method`: ``colora``; ``colora-centered`` (``S_i = S_bar + Delta_i`` with the ridge
``TrainConfig.ridge`` on the deviations; :func:`select_ridge` chooses its strength on
validation data); ``local`` (one LoRA per user); ``global`` (one LoRA for everyone: CoLoRA with
every ``S_i`` frozen at ``I``); ``fedavg-lora`` (FedAvg of a shared LoRA, then each user
fine-tunes its own copy); ``base`` (the frozen model).

Centred ridge. With ``ridge = lambda > 0`` every step minimizes

    (1/n) sum_{examples} loss  +  lambda * sum_{layers} (1/k) sum_i ||U Delta_i V^T||_F^2

over the mini-batch (``n`` its size, ``k`` the bank size): lambda = 0 is CoLoRA, lambda -> inf
a shared rank-r LoRA ``U S_bar V^T`` (``global``).
"""

from __future__ import annotations

import dataclasses
import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from colora_jax.nnx._layers import CoLoRALinear, LoRABankLinear, PersonalParam, SharedParam
from colora_jax.nnx._wrap import adapted_layers, apply_colora, apply_lora_bank, colora_users, ridge_penalty, set_child

__all__ = [
    "Examples",
    "TrainConfig",
    "MethodConfig",
    "SCHEMES",
    "METHODS",
    "train",
    "pretrain",
    "predict",
    "per_user_mean",
    "count_parameters",
    "fit_method",
    "select_ridge",
    "validation_loss",
    "next_token_loss",
    "logit_mse",
]

SCHEMES: tuple[str, ...] = ("joint", "alternating", "federated", "shared", "personal")
ADAPTER = nnx.Any(SharedParam, PersonalParam)
LossFn = tp.Callable[[Array, Array], Float[Array, " batch"]]


class Examples(tp.NamedTuple):
    """A pool of examples of many users: ``inputs[n]`` belongs to user ``user_ids[n]``."""

    inputs: Int[Array, "n t"]
    targets: Array  # (n, t) next tokens, or (n, t, vocab) teacher logits
    user_ids: Int[Array, " n"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train the adapter; ``tx`` (any optax optimizer) is passed to :func:`train` apart."""

    scheme: str = "joint"  # one of SCHEMES
    steps: int = 300  # optimizer steps (federated: local steps of one group, summed over rounds)
    batch_size: int = 32  # examples per mixed-user mini-batch
    personal_steps: int = 5  # alternating: steps on the personal bank per cycle
    shared_steps: int = 5  # alternating: steps on the shared factors per cycle
    groups: int = 4  # federated: number of user groups (clients); user u is in group u % groups
    local_steps: int = 10  # federated: local steps per group per round
    federated_personal: bool = True  # federated: train the personal bank locally (False: FedAvg of U, V only)
    ridge: float = 0.0  # centred layers: strength lambda of (1/k) sum_i ||U Delta_i V^T||_F^2 (0: none)
    eval_every: int = 50  # with validation data: steps between validation losses (early stopping)
    progress: bool = True  # show a tqdm progress bar (only on a terminal)

    def validate(self) -> "TrainConfig":
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}: choose one of {', '.join(SCHEMES)}")
        for name in ("steps", "batch_size", "personal_steps", "shared_steps", "groups", "local_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        return self


def next_token_loss(logits: Float[Array, "b t v"], tokens: Int[Array, "b t"]) -> Float[Array, " b"]:
    """Per-example mean cross-entropy ``-log softmax(logits)[token]`` over the sequence."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens), axis=-1)


def logit_mse(outputs: Float[Array, "b t v"], targets: Float[Array, "b t v"]) -> Float[Array, " b"]:
    """Per-example mean squared error between output and teacher logits."""
    return jnp.mean((outputs - targets) ** 2, axis=(1, 2))


@nnx.jit(static_argnames=("loss_fn", "penalize"))
def _step(model, optimizer, inputs, targets, user_ids, ridge, loss_fn, penalize):
    def objective(model):
        with colora_users(model, user_ids):
            loss = jnp.mean(loss_fn(model(inputs), targets))
        return loss + ridge * ridge_penalty(model) if penalize else loss

    loss, grads = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, optimizer.wrt))(model)
    optimizer.update(model, grads)
    return loss


def _batch(data: Examples, rows: Int[Array, " m"], key: Array, size: int) -> tuple[Array, Array, Array]:
    pick = rows[jax.random.randint(key, (size,), 0, rows.shape[0])]
    return data.inputs[pick], data.targets[pick], data.user_ids[pick]


def train(
    model: nnx.Module,
    data: Examples,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    config: TrainConfig,
    key: Array,
    validation: Examples | None = None,
) -> list[float]:
    """Train ``model``'s adapter in place on mixed-user mini-batches; returns the loss per step.

    With ``validation`` data, the mean per-user validation loss (users weighted equally, see
    :func:`validation_loss`) is measured every ``config.eval_every`` steps and at the end, and the
    adapter is left at the best of these points (early stopping; not for ``federated``).

    Args:
      model: a model with adapted layers (:func:`apply_colora` or :func:`apply_lora_bank`).
      data: the training pool.
      loss_fn: ``loss_fn(model_outputs, targets) -> per-example loss``, a hashable function.
      tx: any optax optimizer (a fresh state per parameter group and per federated round).
      config: the scheme and its step counts.
      key: PRNG key for the mini-batch draws.
      validation: optional held-out examples for early stopping.
    """
    config.validate()
    if validation is not None and config.scheme == "federated":
        raise ValueError(
            "early stopping on validation data is not defined for the federated scheme: pass validation=None"
        )
    best: dict = {}

    def checkpoint():
        score = validation_loss(model, validation, loss_fn)
        if not best or score < best["score"]:
            best.update(score=score, state=_snapshot(nnx.state(model, ADAPTER)))

    penalize = config.ridge > 0
    if penalize:
        ridge_penalty(model)  # ValueError now if the model has no centred layer
    ridge = jnp.asarray(config.ridge, jnp.float32)
    all_rows = jnp.arange(data.inputs.shape[0])
    losses: list[float] = []
    total = config.steps
    if config.scheme == "federated":
        total = max(1, config.steps // config.local_steps) * config.groups * config.local_steps
    bar = tqdm(total=total, desc=config.scheme, disable=None if config.progress else True, leave=False)

    def run(optimizer, rows, n, key):
        for k in jax.random.split(key, n):
            batch = _batch(data, rows, k, config.batch_size)
            losses.append(float(_step(model, optimizer, *batch, ridge, loss_fn, penalize)))
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if validation is not None and len(losses) % config.eval_every == 0:
                checkpoint()

    if validation is not None:
        checkpoint()  # the starting point competes too
    if config.scheme in ("joint", "shared", "personal"):
        wrt = {"joint": ADAPTER, "shared": SharedParam, "personal": PersonalParam}[config.scheme]
        run(nnx.Optimizer(model, tx, wrt=wrt), all_rows, config.steps, key)
    elif config.scheme == "alternating":
        personal = nnx.Optimizer(model, tx, wrt=PersonalParam)
        shared = nnx.Optimizer(model, tx, wrt=SharedParam)
        cycle = config.personal_steps + config.shared_steps
        for c, k in enumerate(jax.random.split(key, -(-config.steps // cycle))):
            left = config.steps - c * cycle
            kp, ks = jax.random.split(k)
            run(personal, all_rows, min(config.personal_steps, left), kp)
            if left > config.personal_steps:
                run(shared, all_rows, min(config.shared_steps, left - config.personal_steps), ks)
    else:
        _federated(model, data, tx, config, key, run)
    bar.close()
    if validation is not None:
        checkpoint()
        nnx.update(model, best["state"])
    return losses


def validation_loss(model: nnx.Module, data: Examples, loss_fn: LossFn) -> float:
    """Mean over users of each user's mean loss on ``data`` (users weighted equally)."""
    users = max(m.users for _, m in adapted_layers(model))
    per_example = loss_fn(predict(model, data.inputs, data.user_ids), data.targets)
    return float(jnp.nanmean(per_user_mean(per_example, data.user_ids, users)))


def _snapshot(state: nnx.State) -> nnx.State:
    """A copy of ``state`` that later in-place updates of the model do not change."""
    return jax.tree.map(lambda a: a, state)


def _federated(model, data, tx, config, key, run) -> None:
    users = max(m.users for _, m in adapted_layers(model))
    groups = [np.flatnonzero(np.arange(users) % config.groups == g) for g in range(config.groups)]
    ids = np.asarray(data.user_ids)
    rows = [jnp.asarray(np.flatnonzero(np.isin(ids, g))) for g in groups]
    weights = np.array([r.shape[0] for r in rows], float)
    if not weights.sum():
        raise ValueError("federated training needs data for at least one group")
    weights = weights / weights.sum()
    wrt = ADAPTER if config.federated_personal else SharedParam
    for k in jax.random.split(key, max(1, config.steps // config.local_steps)):
        start = _snapshot(nnx.state(model, ADAPTER))
        shared, personal = None, _snapshot(nnx.state(model, PersonalParam))
        for members, r, w, kg in zip(groups, rows, weights, jax.random.split(k, config.groups)):
            if not r.shape[0]:
                continue
            nnx.update(model, start)
            run(nnx.Optimizer(model, tx, wrt=wrt), r, config.local_steps, kg)
            local = jax.tree.map(lambda a, w=w: w * a, nnx.state(model, SharedParam))
            shared = local if shared is None else jax.tree.map(jnp.add, shared, local)
            mine = jnp.zeros(users, bool).at[members].set(True)
            personal = jax.tree.map(
                lambda keep, new, mine=mine: jnp.where(mine.reshape(-1, *([1] * (new.ndim - 1))), new, keep),
                personal,
                nnx.state(model, PersonalParam),
            )
        nnx.update(model, shared)
        nnx.update(model, personal)


@nnx.jit(static_argnames=("loss_fn",))
def _pretrain_step(model, optimizer, inputs, targets, loss_fn):
    def objective(model):
        return jnp.mean(loss_fn(model(inputs), targets))

    loss, grads = nnx.value_and_grad(objective)(model)
    optimizer.update(model, grads)
    return loss


def pretrain(
    model: nnx.Module,
    inputs: Int[Array, "n t"],
    targets: Array,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    key: Array,
    progress: bool = True,
) -> list[float]:
    """Train every ``nnx.Param`` of a plain (un-adapted) model, in place; returns the losses."""
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    losses: list[float] = []
    with tqdm(total=steps, desc="pretrain", disable=None if progress else True, leave=False) as bar:
        for k in jax.random.split(key, steps):
            pick = jax.random.randint(k, (batch_size,), 0, inputs.shape[0])
            losses.append(float(_pretrain_step(model, optimizer, inputs[pick], targets[pick], loss_fn)))
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return losses


@nnx.jit(static_argnames=("checked",))
def _forward(model, inputs, user_ids, checked):
    with colora_users(model, user_ids, checked=checked):
        return model(inputs)


def predict(
    model: nnx.Module, inputs: Int[Array, "n t"], user_ids: Int[Array, " n"], chunk: int = 256, *, checked: bool = True
) -> Array:
    """The adapted model's outputs for every example, in jitted chunks of ``chunk`` examples.

    ``checked=False`` skips the run-time user-id check (out-of-range ids then give NaN rows).
    """
    return jnp.concatenate(
        [
            _forward(model, inputs[i : i + chunk], user_ids[i : i + chunk], checked)
            for i in range(0, inputs.shape[0], chunk)
        ]
    )


def per_user_mean(values: Float[Array, " n"], user_ids: Int[Array, " n"], users: int) -> Float[Array, " users"]:
    """Mean of ``values`` over each user's examples (NaN for a user with none)."""
    total = jax.ops.segment_sum(values, user_ids, users)
    count = jax.ops.segment_sum(jnp.ones_like(values), user_ids, users)
    return total / count


def count_parameters(model: nnx.Module, wrt: tp.Any) -> int:
    """Number of scalars in the variables of ``model`` selected by the filter ``wrt``."""
    return int(sum(a.size for a in jax.tree.leaves(nnx.state(model, wrt))))


def _shared_lora_to_bank(model: nnx.Module) -> nnx.Module:
    """Replace each CoLoRA layer (with ``S_i = I``) by a LoRA bank, in place.

    Its users all start at ``A = V``, ``B = U^T`` (the same update ``V U^T``).
    """
    for path, layer in [(p, m) for p, m in nnx.iter_graph(model) if isinstance(m, CoLoRALinear)]:
        bank = LoRABankLinear(
            layer.base,
            users=layer.users,
            rank=layer.rank,
            initial_factors=(layer.shared_v[...], layer.shared_u[...]),
            dtype=layer.dtype,
            users_axis=layer.users_axis,
            example_axis=layer.example_axis,
        )
        set_child(model, path, bank)
    return model


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """What every method shares, so that the comparison is on equal terms."""

    rank: int = 2  # r of every adapter (CoLoRA, each per-user LoRA, the shared LoRA)
    targets: tuple[str, ...] = ("up",)  # layers to adapt (names or regexes)
    colora_scheme: str = "joint"  # CoLoRA's training scheme (joint / alternating / federated)
    train: TrainConfig = TrainConfig()  # steps, batch size, groups; scheme is set per method
    finetune_steps: int = 100  # fedavg-lora: local fine-tuning steps after the federated rounds
    ridge: float = 1.0  # colora-centered: strength lambda of the ridge on the deviations Delta_i


Fit = tp.Callable[[nnx.Module, Examples, LossFn, optax.GradientTransformation, MethodConfig, int, tuple, tp.Any], int]


def train_colora(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_colora(model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]))
    scheme = config.colora_scheme
    train(
        model,
        data,
        loss_fn,
        tx,
        dataclasses.replace(config.train, scheme=scheme),
        keys[1],
        None if scheme == "federated" else validation,
    )
    return count_parameters(model, ADAPTER)


def train_centered(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_colora(
        model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]), centered=True
    )
    train(
        model,
        data,
        loss_fn,
        tx,
        dataclasses.replace(config.train, scheme="joint", ridge=config.ridge),
        keys[1],
        validation,
    )
    return count_parameters(model, ADAPTER)


def train_local(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_lora_bank(model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]))
    train(model, data, loss_fn, tx, dataclasses.replace(config.train, scheme="personal"), keys[1], validation)
    return count_parameters(model, PersonalParam)


def train_global(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_colora(model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]))
    train(model, data, loss_fn, tx, dataclasses.replace(config.train, scheme="shared"), keys[1], validation)
    return count_parameters(model, SharedParam)


def train_fedavg(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_colora(model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]))
    fed = dataclasses.replace(config.train, scheme="federated", federated_personal=False)
    train(model, data, loss_fn, tx, fed, keys[1])
    _shared_lora_to_bank(model)
    tune = dataclasses.replace(config.train, scheme="personal", steps=config.finetune_steps)
    train(model, data, loss_fn, tx, tune, keys[2], validation)
    return count_parameters(model, PersonalParam)


def train_base(model, data, loss_fn, tx, config, users, keys, validation) -> int:
    apply_colora(model, users=users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=keys[0]))
    return 0


# The NNX trainer of each method that has one, under the method's name in colora_jax.METHODS
# (the registry; tests/test_public_api.py checks the names), so one spelling serves the linear
# harness, the CLI and this one. The map lives here: the NNX path points to the core, never back.
TRAINERS: dict[str, tp.Callable[..., int]] = {
    "colora": train_colora,
    "colora-centered": train_centered,
    "local": train_local,
    "global": train_global,
    "fedavg-lora": train_fedavg,
    "base": train_base,
}
METHODS: tuple[str, ...] = tuple(TRAINERS)


def fit_method(
    method: str,
    base: nnx.Module,
    data: Examples,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    config: MethodConfig,
    *,
    users: int,
    key: Array,
    validation: Examples | None = None,
) -> tuple[nnx.Module, int]:
    """Fit one method on ``data``, starting from a clone of ``base``.

    With ``validation`` data every method is early-stopped on it (:func:`train`; for
    ``fedavg-lora`` its local fine-tuning stage).

    Returns:
      The adapted model (route ids with :func:`colora_users`) and its trainable parameter count.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for NNX models: choose one of {', '.join(METHODS)}")
    model = nnx.clone(base)
    fit = TRAINERS[method]
    params = fit(model, data, loss_fn, tx, config, users, tuple(jax.random.split(key, 3)), validation)
    return model, params


def select_ridge(
    base: nnx.Module,
    data: Examples,
    validation: Examples,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    config: MethodConfig,
    ridges: tp.Sequence[float],
    *,
    users: int,
    key: Array,
) -> tuple[float, dict[float, float], nnx.Module]:
    """Choose the centred ridge's strength on validation data.

    For each ``lambda`` in ``ridges``, fit ``colora-centered`` on ``data`` (early-stopped on
    ``validation``) and measure the mean per-user validation loss (users weighted equally,
    :func:`validation_loss`); return the best ``lambda`` (the smallest on ties), every
    validation loss, and the model fitted with the best ``lambda``.
    """
    if not ridges or min(ridges) < 0:
        raise ValueError(f"ridges must be a non-empty sequence of strengths >= 0, got {ridges}")
    scores, models = {}, {}
    for lam in ridges:
        models[float(lam)], _ = fit_method(
            "colora-centered",
            base,
            data,
            loss_fn,
            tx,
            dataclasses.replace(config, ridge=lam),
            users=users,
            key=key,
            validation=validation,
        )
        scores[float(lam)] = validation_loss(models[float(lam)], validation, loss_fn)
    best = min(sorted(scores), key=lambda lam: scores[lam])
    return best, scores, models[best]
