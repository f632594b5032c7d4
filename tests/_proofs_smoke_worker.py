"""Subprocess helper of test_proofs_smoke.py: several proof scripts' --smoke runs in one process.

python tests/_proofs_smoke_worker.py OUT NAME [NAME ...]
    Runs each ``python -m proofs_numerics.NAME --smoke --no-progress --out OUT/NAME --results
    OUT/NAME/results`` in turn, as ``python -m`` would (``runpy``, run as ``__main__``), and
    prints one JSON line: per script its exit status, stdout and stderr (the traceback when it
    raised). One interpreter and one JAX import for all of them instead of one each; only
    scripts that set no process-wide JAX flag may share it (convergence turns on float64).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback


def run_script(name: str, out: str) -> dict:
    argv = ["--smoke", "--no-progress", "--out", out, "--results", os.path.join(out, "results")]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved, status = sys.argv, 0
    sys.argv = [f"proofs_numerics.{name}", *argv]
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
    return {"returncode": status, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


if __name__ == "__main__":
    out = sys.argv[1]
    print(json.dumps({name: run_script(name, os.path.join(out, name)) for name in sys.argv[2:]}))
