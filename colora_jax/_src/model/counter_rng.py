"""Counter-based Gaussian draws indexed by (user, sample): the nested sample stream.

Entry ``[i, j, :]`` of ``normals(key, users, samples, width)`` is a function of ``(key, i, j)``
alone, never of how many users or samples are drawn. So the first ``n`` samples of a trial
are the same whatever the largest ``n`` in a sweep (common random numbers), user ``i``'s data
do not depend on how many users there are, and a sweep over ``n`` can generate the largest
``n`` once and mask the rest.

How: Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
easy as 1, 2, 3", SC 2011; the generator behind ``jax.random``), used as a counter-based
hash in two levels. The pair ``(i, j)`` hashed under the trial's key gives the key of that
(user, sample); hashing the positions ``0, 1, ...`` under it gives the sample's random words.
Words become uniforms by the usual mantissa trick (23 bits in float32, 52 in float64) and
uniforms become normals by Box-Muller (``sqrt(-2 log u1) (cos, sin)(2 pi u2)``).

Why not ``jax.random.normal``: its streams depend on the requested shape (not nested), and on
CPU its ``threefry2x32`` primitive runs the rounds as a rolled loop that materializes every
intermediate array, and its ``erf_inv`` transform is the costliest part of drawing normals.
Written as one elementwise expression, the hash and Box-Muller fuse into a single loop, cheaper
to compile and to run. The hash is tested bit for bit against ``jax.extend.random.threefry2x32_p``.

Why Box-Muller and not the inverse CDF (``sqrt(2) erf_inv(u)``, ``jax.random.normal``'s transform),
although XLA:CPU evaluates ``cos`` and ``sin`` one element at a time, the costliest part of a
draw (docs/scale.md measures it): ``erf_inv`` is expanded into HLO multiplies and adds, and
XLA:CPU fuses them into FMA instructions differently in different programs, so a draw would no
longer depend on its index alone (float64 draws of ``generate_chunks`` and ``generate`` then
differ by one ulp in some entries; they agree when FMA is unavailable, ``--xla_cpu_max_isa=AVX``).
Nesting, chunking and batched-equals-looped rest on that property, which the transform's
``log1p``, ``sqrt``, ``cos`` and ``sin`` keep in every program the tests compare (docs/scale.md,
"Why two targets stay missed").

Every operation is elementwise in ``(i, j, position)``, so generation shards over users
with no communication (each device hashes its own users' indices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray, UInt32

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA  # Threefry's key-schedule constant


def _u32(value: int):
    return np.uint32(value)


def _rotate_left(x, bits: int):
    return lax.bitwise_or(lax.shift_left(x, _u32(bits)), lax.shift_right_logical(x, _u32(32 - bits)))


def threefry2x32(k0: UInt32[Array, "..."], k1, x0, x1) -> tuple[UInt32[Array, "..."], UInt32[Array, "..."]]:
    """Threefry-2x32-20 of the counter ``(x0, x1)`` under the key ``(k0, k1)`` (uint32, same shape).

    Bit for bit the hash of ``jax.random``'s threefry implementation, as plain elementwise
    ``lax`` operations: XLA fuses it with whatever consumes the words, and tracing it costs
    one primitive per operation (``jnp`` operators would add a nested jit each).
    """
    k0, k1, x0, x1 = jnp.broadcast_arrays(k0, k1, x0, x1)
    ks = (k0, k1, lax.bitwise_xor(lax.bitwise_xor(k0, k1), lax.full_like(k0, _PARITY)))
    x0, x1 = lax.add(x0, ks[0]), lax.add(x1, ks[1])
    for group in range(5):
        for bits in _ROTATIONS[group % 2]:
            x0 = lax.add(x0, x1)
            x1 = lax.bitwise_xor(_rotate_left(x1, bits), x0)
        x0 = lax.add(x0, ks[(group + 1) % 3])
        x1 = lax.add(lax.add(x1, ks[(group + 2) % 3]), lax.full_like(x1, group + 1))
    return x0, x1


def key_words(key: PRNGKeyArray) -> tuple[UInt32[Array, ""], UInt32[Array, ""]]:
    """The two uint32 words of a threefry key (typed ``jax.random.key`` or legacy ``PRNGKey``)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
        if "threefry" not in str(impl):
            raise ValueError(f"the sample stream needs a threefry key, got a {impl} key: use jax.random.key(seed)")
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(f"expected one threefry key (2 uint32 words), got an array of shape {key.shape}, {key.dtype}")
    return key[0], key[1]


def _unit(words, dtype):
    """Uniforms in [0, 1) from random words: float32 from one word, float64 from a pair."""
    if dtype == jnp.float32:
        mantissa = (words >> np.uint32(9)) | np.uint32(0x3F800000)
        return lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    hi, lo = words
    bits = (hi.astype(jnp.uint64) << np.uint64(20)) | (lo.astype(jnp.uint64) >> np.uint64(12))
    return lax.bitcast_convert_type(bits | np.uint64(0x3FF0000000000000), jnp.float64) - 1.0


def normals(
    key: PRNGKeyArray, users: int, samples: int, width: int, dtype=jnp.float32, first_user=0
) -> Float[Array, "users samples width"]:
    """Standard normal draws whose entry ``[i, j, :]`` depends only on ``(key, first_user + i, j)``.

    Args:
      key: a threefry PRNG key (the stream's seed).
      users, samples: the leading index ranges ``i < users``, ``j < samples``.
      width: normals per (user, sample).
      dtype: float32 (one 32-bit word per uniform) or float64 (two words per uniform).
      first_user: index of the first user drawn (may be traced): users ``first_user ..
        first_user + users - 1`` of the stream, e.g. one chunk of a problem generated in chunks.

    Returns:
      ``(users, samples, width)`` independent N(0, 1) draws. ``normals(key, u, s, w)`` equals
      ``normals(key, U, S, w)[:u, :s]`` bit for bit for ``u <= U``, ``s <= S``.
    """
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"normals are drawn in float32 or float64, not {dtype}")
    k0, k1 = key_words(key)
    grid = (users, samples)
    user = lax.broadcasted_iota(jnp.uint32, grid, 0) + jnp.asarray(first_user).astype(jnp.uint32)
    a, b = threefry2x32(k0, k1, user, lax.broadcasted_iota(jnp.uint32, grid, 1))
    a, b = a[..., None], b[..., None]
    pairs = (width + 1) // 2  # Box-Muller turns two uniforms into two normals
    if dtype == jnp.float32:  # one hash gives two words: the two uniforms of a pair
        w0, w1 = threefry2x32(a, b, lax.broadcasted_iota(jnp.uint32, grid + (pairs,), 2), np.uint32(0))
        u1, u2 = _unit(w0, dtype), _unit(w1, dtype)
    else:  # one hash per uniform: counters (p, 0) and (p, 1)
        position = lax.broadcasted_iota(jnp.uint32, grid + (pairs,), 2)
        u1 = _unit(threefry2x32(a, b, position, np.uint32(0)), dtype)
        u2 = _unit(threefry2x32(a, b, position, np.uint32(1)), dtype)
    radius = jnp.sqrt(-2.0 * jnp.log1p(-u1))  # 1 - u1 lies in (0, 1]: no log(0)
    angle = (2 * np.pi) * u2
    return jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)[..., :width]
