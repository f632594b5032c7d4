"""One script per claim of the CoLoRA theory: ``python -m proofs_numerics.NAME [--smoke]``.

Each script runs the library, checks its claim numerically, prints PASS/FAIL with the measured
figures and writes ``figures/NAME.png`` and ``figures/NAME.json``; ``python -m
proofs_numerics.run_all`` (``make proofs``) runs them all and prints one table.
"""
