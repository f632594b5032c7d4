"""The one reduction over users: every sum over users an estimator forms goes through here.

The CoLoRA estimators couple the users only through sums over them (the pooled normal equations
of U and V, the objective, the spectral moments, the Gauss-Newton matrix of VarPro). An
estimator writes each such sum once, as a ``part(design, per_user)`` that returns the sum over
*the users it is given* and any per-user outputs, and hands it to ``Users.sum``. The execution
mode is the ``Users`` object it is given:

* ``AllUsers(design)``: every user in memory, one call of ``part`` on all of them;
* ``AllUsers(design, axis_name)``: inside ``shard_map``, each device's users, the sums added
  across the mesh axis (``lax.psum``, ``blocks.pool``);
* ``UserChunks(chunk, nchunks)``: users visited chunk by chunk in a ``lax.scan`` (memory: one
  chunk plus the per-user outputs), optionally with ``axis_name`` as well.

So an estimator is written once and runs in every mode, and the three agree up to the order of
floating-point summation (tested for every registered algorithm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from colora_jax._src.model import blocks
from colora_jax._src.model.data import Observations


class Users:
    """Where the users are and how a sum over them is formed (``AllUsers``, ``UserChunks``)."""

    axis_name: str | None  # mesh axis of the users (inside shard_map), or None

    def sum(self, part: Callable, per_user=None):
        """``(sum over users of part(d, x)[0], per-user part(d, x)[1] stacked over users)``.

        ``part(design, x)`` sees a group of users' ``Design`` and their rows ``x`` of the pytree
        ``per_user`` (leading axis: users; None for none) and returns ``(partial sum, per-user
        outputs)``; the partial sums are added over the groups and across ``axis_name``.
        """
        raise NotImplementedError

    def pool(self, x):
        """A sum over this device's users added across the mesh axis (identity on one device)."""
        return blocks.pool(x, self.axis_name)

    def local(self, x):
        """``x`` (replicated) marked as varying over the users' mesh axis, for a derivative inside a ``part``.

        Inside ``shard_map`` the derivative of this device's sum with respect to a replicated value
        comes back already summed over the devices (the transpose of the implicit broadcast); a
        ``part`` must return this device's partial sum, which ``sum`` then pools. Identity on one
        device.
        """
        return x if self.axis_name is None else jax.lax.pcast(x, (self.axis_name,), to="varying")

    @property
    def layout(self) -> Observations:
        """Shapes and dtypes of one group's observations (for static checks and initialization)."""
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        """Whether every user's data are held at once (then ``W`` of all users can be formed)."""
        return False


@dataclasses.dataclass(frozen=True)
class AllUsers(Users):
    """Every user of ``design`` at once; the sums are ``psum``s over ``axis_name`` when given."""

    design: blocks.Design
    axis_name: str | None = None

    def sum(self, part, per_user=None):
        """One call of ``part`` on all users, its sum pooled across the mesh axis."""
        total, out = part(self.design, per_user)
        return self.pool(total), out

    @property
    def layout(self):
        """The observations' own shapes."""
        return Observations(self.design.X, self.design.Y, self.design.model)

    @property
    def in_memory(self) -> bool:
        """Always: the design holds every user."""
        return True


@dataclasses.dataclass(frozen=True)
class UserChunks(Users):
    """Users visited ``nchunks`` chunks at a time: ``chunk(c)`` gives chunk ``c``'s observations.

    ``c`` is a traced integer: slice stored arrays (``stored_chunks``) or generate the chunk from
    its key on every pass (``generate(key, config, first_user=c m)``). Every chunk has the same
    shapes; the users are ``nchunks`` times a chunk's.
    """

    chunk: Callable[[Array], Observations]
    nchunks: int
    axis_name: str | None = None

    def sum(self, part, per_user=None):
        """``part`` on every chunk in a ``lax.scan``, the partial sums added, then pooled across devices."""
        chunked = jax.tree.map(lambda a: a.reshape((self.nchunks, -1) + a.shape[1:]), per_user)
        xs = (jnp.arange(self.nchunks), chunked)
        at = lambda c, x: part(blocks.design(self.chunk(c)), x)
        shapes = jax.eval_shape(lambda x: at(*x)[0], jax.tree.map(lambda a: a[0], xs))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def step(total, x):
            value, out = at(*x)
            return jax.tree.map(jnp.add, total, value), out

        total, out = jax.lax.scan(step, zeros, xs)
        out = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
        return self.pool(total), out

    @property
    def layout(self):
        """One chunk's shapes (``jax.ShapeDtypeStruct`` leaves), with the users of all chunks."""
        first = jax.eval_shape(self.chunk, jnp.asarray(0))
        grow = lambda s: jax.ShapeDtypeStruct((s.shape[0] * self.nchunks,) + s.shape[1:], s.dtype)
        return dataclasses.replace(first, X=grow(first.X), Y=grow(first.Y), counts=None)


def stored_chunks(observations: Observations, nchunks: int) -> Callable[[Array], Observations]:
    """``chunk(c)`` reading users ``c m .. (c+1) m - 1`` of stored observations (``m = k / nchunks``)."""
    k = observations.users
    if k % nchunks:
        raise ValueError(f"{k} users cannot be split into {nchunks} equal chunks: choose a chunk count dividing {k}")
    m = k // nchunks
    return lambda c: jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, c * m, m), observations)
