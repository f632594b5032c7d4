"""Frozen result hashes: SHA-256 of what every execution path computes, to check a refactor bit for bit.

Each entry hashes the bytes of one computation's results on a fixed small problem: every
registered algorithm through ``fit`` (float32 and float64, both models), every registered method
through ``fit_method``, ``run_trials`` over a sample grid, a sweep group (``run_cells``), the
streamed and the sharded fit (one device), and an NNX forward with CoLoRA adapters. Record the
hashes before a restructuring and compare after it:

    python -m benchmarks.frozen_hashes --write results/frozen_hashes.json
    python -m benchmarks.frozen_hashes --compare results/frozen_hashes.json   # exit 1 on any change

Not a test: a change of an estimator's numbers is sometimes intended (then each changed entry is
explained); the comparison says which entries moved.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

import colora_jax as cj
from proofs_numerics._common import array_digest as digest  # dtype, shape and bytes of every leaf


def problem(model: str, x64: bool, users: int = 6, samples: int = 30):
    pc = cj.ProblemConfig(
        model=model, users=users, d_out=6, d_in=5, rank=2, samples=samples, test_samples=4, noise=1e-3, x64=x64
    )
    return pc, cj.generate(jax.random.key(7), pc)


def algorithm_hashes(out: dict) -> None:
    for x64 in (False, True):
        with jax.enable_x64(x64):
            for model in ("sensing", "regression"):
                _, p = problem(model, x64)
                for name in cj.ALGORITHMS:
                    fc = cj.FitConfig(rank=2, iters=12, algorithm=name)
                    est, trace = cj.fit(p.train, fc, key=jax.random.key(1), truth=p.truth)
                    out[f"fit/{name}/{model}/{'f64' if x64 else 'f32'}"] = digest((est, trace))


def method_hashes(out: dict) -> None:
    _, p = problem("sensing", False)
    for name in cj.METHODS:
        fc = cj.FitConfig(rank=2, iters=10)
        f = cj.fit_method(name, p.train, fc, key=jax.random.key(2), truth=p.truth)
        out[f"method/{name}"] = digest(f)


def harness_hashes(out: dict) -> None:
    pc, p = problem("sensing", False)
    fc = cj.FitConfig(rank=2, iters=10)
    out["run_trials/grid"] = digest(cj.run_trials(jax.random.key(3), pc, fc, trials=4, samples=[12, 20, 30]))
    out["run_trials/varpro"] = digest(
        cj.run_trials(jax.random.key(3), pc, cj.FitConfig(rank=2, iters=10, algorithm="varpro"), trials=3)
    )
    cells = [
        cj.Cell(cj.ProblemConfig(**{**pc.__dict__, "samples": n}), fc, trials=3, seed=4, pad_samples=30)
        for n in (15, 30)
    ]
    out["run_cells/group"] = digest([r["evaluation"] for r in cj.run_cells(cells, trace=True)])
    out["fit_streaming/altmin"] = digest(cj.fit_streaming(p.train, fc, nchunks=3))
    out["fit_streaming/varpro"] = digest(
        cj.fit_streaming(p.train, cj.FitConfig(rank=2, iters=10, algorithm="varpro"), nchunks=3)
    )
    mesh = cj.users_mesh(jax.devices()[:1])
    out["fit_sharded/altmin"] = digest(cj.fit_sharded(p.train, fc, mesh=mesh))


def nnx_hashes(out: dict) -> None:
    from flax import nnx

    import colora_jax.nnx as cn

    cfg = cn.TransformerConfig(vocab=16, seq_len=8, width=16, depth=1, heads=2)
    model = cn.Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(5)))
    model = cn.apply_colora(model, users=3, rank=2, targets=["query", "up"], rngs=nnx.Rngs(jax.random.key(6)))
    for j, (_, layer) in enumerate(cn.adapted_layers(model)):  # U = 0 at the start: give every factor values
        for i, var in enumerate((layer.shared_u, layer.shared_v, layer.personal)):
            var.set_value(0.1 * jax.random.normal(jax.random.key(10 * j + i), var[...].shape, var[...].dtype))
    tokens = jax.random.randint(jax.random.key(8), (4, cfg.seq_len), 0, cfg.vocab)
    out["nnx/forward"] = digest(cn.user_outputs(model, tokens, np.array([0, 1, 2, 1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="PATH", help="write the hashes as JSON to PATH")
    group.add_argument("--compare", metavar="PATH", help="compare with the hashes in PATH (exit 1 on a change)")
    args = parser.parse_args()
    out: dict = {}
    for part in (algorithm_hashes, method_hashes, harness_hashes, nnx_hashes):
        part(out)
    if args.write:
        with open(args.write, "w") as f:
            json.dump({"code_version": cj.code_version(), "hashes": out}, f, indent=1)
        print(json.dumps({"entries": len(out), "path": args.write}))
        print(f"{len(out)} result hashes written to {args.write}")
        return
    try:
        with open(args.compare) as f:
            frozen = json.load(f)["hashes"]
    except (OSError, ValueError, KeyError) as err:
        print(f"frozen_hashes: cannot read {args.compare} ({err}): write it first with --write", file=sys.stderr)
        sys.exit(2)
    changed = sorted(k for k in out if k in frozen and out[k] != frozen[k])
    new, gone = sorted(set(out) - set(frozen)), sorted(set(frozen) - set(out))
    print(json.dumps({"same": len(out) - len(changed) - len(new), "changed": changed, "new": new, "gone": gone}))
    print(f"{len(out) - len(changed) - len(new)} same, {len(changed)} changed, {len(new)} new, {len(gone)} gone")
    sys.exit(1 if changed or gone else 0)


if __name__ == "__main__":
    main()
