"""Subprocess helper of test_proofs_smoke.py: the proof scripts' --smoke runs in one process.

python tests/_proofs_smoke_worker.py OUT RUN [RUN ...]
    RUN is a script NAME, or NAME:confirm for its confirmation run. Each runs in turn as
    ``python -m proofs_numerics.NAME --smoke --no-progress --out OUT/NAME --results
    OUT/NAME/results [--confirm]`` would (``runpy``, as ``__main__``): one interpreter and one
    JAX import for all of them instead of one each. Prints one JSON line: per RUN its exit
    status, stdout, stderr (the traceback when it raised) and the sha256 of OUT/NAME/NAME.png
    after it. A script may set a process-wide JAX flag (convergence turns on float64 when
    imported): a RUN after such a change is refused (exit status 3), so such a script goes last.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import runpy
import sys
import traceback

import jax


def run_script(name: str, out: str, confirm: bool) -> dict:
    argv = ["--smoke", "--no-progress", "--out", out, "--results", os.path.join(out, "results")]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved, status = sys.argv, 0
    sys.argv = [f"proofs_numerics.{name}", *argv, *(["--confirm"] if confirm else [])]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_module(f"proofs_numerics.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        status = 1
        stderr.write(traceback.format_exc())
    finally:
        sys.argv = saved
    figure = os.path.join(out, f"{name}.png")
    digest = hashlib.sha256(open(figure, "rb").read()).hexdigest() if os.path.exists(figure) else None
    return {"returncode": status, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "figure_sha256": digest}


def main(out: str, runs: list[str]) -> dict:
    results, flags = {}, jax.config.jax_enable_x64
    for run in runs:
        name, _, mode = run.partition(":")
        if jax.config.jax_enable_x64 != flags:
            results[run] = {"returncode": 3, "stdout": "", "stderr": "an earlier script turned on float64"}
            continue
        results[run] = run_script(name, os.path.join(out, name), mode == "confirm")
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
