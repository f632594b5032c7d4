"""Experiments: batched trials, resumable sweeps, trials sharded over a device mesh."""
