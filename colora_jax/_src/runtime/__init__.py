"""Runtime (the lowest floor): caches, CPU threads, worker processes, interrupts, provenance, JSON."""
