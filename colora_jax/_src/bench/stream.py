"""``python -m colora_jax._src.bench.stream USERS NCHUNKS``: the streamed regression problem.

n = 16 samples, d_in = d_out = 32, rank 4, float32. The data are generated chunk by chunk
(``generate_chunks``) and *stored* (``k n (d_in + d_out)`` floats, 4.1 GB at k = 10^6); each
AltMin pass re-reads them a chunk at a time and forms that block's statistics on the fly, so
the per-user ``C_i, B_i`` (8.2 GB at k = 10^6) are never held. Prints one JSON line: peak
RSS of this process, generation time, compile time and seconds per iteration.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import jax

from colora_jax._src.algorithms import fit_streaming
from colora_jax._src.bench.suite import seconds_per_iteration
from colora_jax._src.model.chunks import generate_chunks
from colora_jax._src.model.config import ProblemConfig


def main(users: int, nchunks: int) -> dict:
    """Generate the streamed regression problem, time its AltMin iterations, report peak memory."""
    pc = ProblemConfig(
        model="regression", users=users, d_out=32, d_in=32, rank=4, samples=16, test_samples=0, noise=0.1
    )
    t = time.perf_counter()
    planted = jax.jit(generate_chunks, static_argnums=(1, 2))(jax.random.key(0), pc, nchunks)
    jax.block_until_ready(planted)
    gen_s = time.perf_counter() - t
    make = lambda fc: lambda o: fit_streaming(o, fc, nchunks=nchunks, truth_U=planted.U, truth_V=planted.V)
    seconds, compile_s, _ = seconds_per_iteration(make, planted.train, pc.rank, iters=(1, 3), repeats=1)
    return {
        "users": users,
        "chunks": nchunks,
        "samples": 16,
        "d": 32,
        "rank": 4,
        "dtype": "float32",
        "data": "stored (generated once, chunk by chunk); statistics formed per chunk on every pass",
        "data_bytes": planted.train.X.nbytes + planted.train.Y.nbytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "generate_seconds": gen_s,
        "compile_seconds": compile_s,
        "seconds_per_iteration": seconds,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
