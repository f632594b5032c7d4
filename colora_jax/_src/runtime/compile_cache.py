"""JAX's persistent compilation cache, on by default for every entry point of colora_jax.

Compiling dominates a small run on a CPU (seconds per program); with the cache, a command run a
second time (in a new process) loads its executables from disk instead. Library users opt in
with one call, ``colora_jax.enable_compile_cache()``; the CLI, ``make demo``, the proof scripts,
``colora bench`` and the test suite call it for you.

Where (XDG conventions): ``$COLORA_JAX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/colora_jax/jax``,
else ``~/.cache/colora_jax/jax``. ``COLORA_JAX_CACHE_DIR=off`` (or ``0``, ``none``, or empty)
disables it; the CLI's ``--compile-cache DIR`` / ``--no-compile-cache`` do the same per command.
JAX keys every entry by the program, the JAX/XLA version, the device and the flags, so one
directory serves every version and configuration. A directory that cannot be written, or
entries that cannot be read, degrade to compiling, with one warning line.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import warnings

ENV = "COLORA_JAX_CACHE_DIR"
_OFF = {"", "0", "off", "none", "false", "no"}
_state: dict[str, str | None] = {}
_counts = {"requests": 0, "hits": 0, "compiles": 0, "compile_seconds": 0.0}


def _listen() -> None:
    """Count this process's persistent-cache lookups and XLA compiles (JAX's monitoring events)."""
    import jax

    if _state.get("listening"):
        return
    _state["listening"] = "yes"

    def event(name, **_):
        if name == "/jax/compilation_cache/compile_requests_use_cache":
            _counts["requests"] += 1
        elif name == "/jax/compilation_cache/cache_hits":
            _counts["hits"] += 1

    def duration(name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            _counts["compiles"] += 1
            _counts["compile_seconds"] += seconds

    jax.monitoring.register_event_listener(event)
    jax.monitoring.register_event_duration_secs_listener(duration)


def stats() -> dict:
    """This process so far: the cache directory, lookups, hits, misses, XLA compiles and their seconds.

    ``compiles`` counts every backend compile (cache misses, and programs not cached); a warm
    run of a command that was run before has ``misses == 0``. ``executables_loaded`` and
    ``executables_saved`` count the trial programs stored whole (``executable_cache``): a loaded
    one is neither traced nor looked up in JAX's cache.
    """
    from colora_jax._src.runtime import executable_cache

    counts = {"dir": _state.get("dir"), **_counts, "misses": _counts["requests"] - _counts["hits"]}
    return counts | executable_cache.stats()


def default_cache_dir() -> str | None:
    """The cache directory the environment asks for (None: disabled), see the module docstring."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "colora_jax", "jax")


def _writable(path: str) -> str | None:
    """None if ``path`` can hold cache entries, else the reason it cannot."""
    try:
        pathlib.Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def enable_compile_cache(path: str | os.PathLike | None = None, *, disable: bool = False) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``default_cache_dir()``).

    Every program is cached, however fast it compiled: the executables here are small and
    compile quickly, but compiling them is what dominates a short run. Safe to call repeatedly.

    Args:
      path: the cache directory (created if missing); default from the environment.
      disable: turn the cache off for this process instead.

    Returns:
      The directory in use, or None when the cache is off (disabled, or the directory is not
      writable: then one warning line says so and everything compiles as usual).
    """
    import jax

    _listen()
    target = None if disable else (os.fspath(path) if path is not None else default_cache_dir())
    if _state.get("dir", "unset") == target:
        return target
    if target is not None:
        reason = _writable(target)
        if reason is not None:
            print(
                f"colora_jax: compile cache {target} is not writable ({reason}); compiling without it", file=sys.stderr
            )
            target = None
    jax.config.update("jax_compilation_cache_dir", target)
    if target is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        _one_line_cache_warnings()
    _state["dir"] = target
    return target


_CACHE_WARNINGS = (
    "Error reading persistent compilation cache entry",
    "Error writing persistent compilation cache entry",
)


def _one_line_cache_warnings() -> None:
    """JAX warns once per unreadable (corrupt) or unwritable entry, then compiles it: say it once."""
    if _state.get("hooked"):
        return
    _state["hooked"] = "yes"
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if not text.startswith(_CACHE_WARNINGS):
            return show(message, category, filename, lineno, file, line)
        if not _state.get("warned"):
            _state["warned"] = "yes"
            reason = text.split(": ", 1)[-1]
            print(
                f"colora_jax: compile cache {_state.get('dir')}: unusable entries are compiled afresh ({reason})",
                file=sys.stderr,
            )

    warnings.showwarning = showwarning


def cache_dir() -> str | None:
    """The directory ``enable_compile_cache`` set up in this process (None: off or never enabled)."""
    return _state.get("dir")
