"""The two caches of compiled programs: JAX's persistent compilation cache, and trial programs stored whole.

Both live under one directory and are on or off together: one module, one floor (runtime).

JAX's persistent compilation cache
----------------------------------

On by default for every entry point of colora_jax.

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

Trial programs stored whole (``load_or_compile``)
-------------------------------------------------

Compiled trial programs saved whole, so that a warm run skips tracing and lowering too.

JAX's persistent compilation cache (above) skips XLA's compile, but its key is the
lowered program, so every process still traces and lowers the trial program before it can look
it up, most of a warm short run's time. Here the compiled executable itself is
stored, keyed by everything that determines it *before* tracing:

- the static arguments (problem and fit configurations, batch, method) and the argument shapes,
- a hash of the colora_jax source files (any edit, committed or not, gives new keys),
- the JAX and jaxlib versions, the backend (platform, version, device kind and count), the CPU
  cores this process may use, ``XLA_FLAGS``, XLA's compile options (which carry
  ``jax_disable_most_optimizations``) and JAX's trace-time configuration (``jax_enable_x64``,
  dtype and rank promotion, matmul precision, ...).

A key whose parts do not have a stable text form (an object printed with its address) is not
cached.

Placement. A stored program runs on the devices it was compiled for: the key holds the
placement the caller asks for (by default the default device; a mesh's devices, axis names and
shape where the program is sharded), the entry records the compiled program's device ids and its
input and output shardings, and a loaded program is bound to exactly those devices and checked
against them. ``serialize_executable`` would otherwise load a one-device program onto every
visible device, and its first call fails ("Expected args ... to have 4 shards").

Integrity. An entry holds the sha256 digest of its payload, checked before anything is
unpickled or loaded: a damaged entry is reported in one warning line and compiled afresh.

Entries live in ``<compile cache dir>/colora_executables`` and are on exactly when the
compile cache is (``enable_compile_cache``, ``COLORA_JAX_CACHE_DIR``, ``--no-compile-cache``).
An entry that cannot be read or loaded is compiled afresh (one warning line per process); a
directory that cannot be written is skipped silently (the compile cache already said so). The
folder is kept under ``MAX_BYTES`` (2 GiB) by deleting the least recently used entries.

Loading relies on ``jax.experimental.serialize_executable``, with two jaxlib 0.9.2 pitfalls
handled here. Before the first load on CPU the LAPACK kernels are initialized (jaxlib
initializes them while lowering a linear-algebra op, which a loaded program never does: without
this, running it crashes the process). And a program to be stored is compiled with JAX's
persistent cache bypassed: an executable that JAX loaded from its own cache serializes without
its kernels, and the stored copy then fails in the next process ("Function ... not found").
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pathlib
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable

ENV = "COLORA_JAX_CACHE_DIR"
_OFF = {"", "0", "off", "none", "false", "no"}
_compile_state: dict[str, str | None] = {}
_compile_counts = {"requests": 0, "hits": 0, "compiles": 0, "compile_seconds": 0.0}


def _listen() -> None:
    """Count this process's persistent-cache lookups and XLA compiles (JAX's monitoring events)."""
    import jax

    if _compile_state.get("listening"):
        return
    _compile_state["listening"] = "yes"

    def event(name, **_):
        if name == "/jax/compilation_cache/compile_requests_use_cache":
            _compile_counts["requests"] += 1
        elif name == "/jax/compilation_cache/cache_hits":
            _compile_counts["hits"] += 1

    def duration(name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            _compile_counts["compiles"] += 1
            _compile_counts["compile_seconds"] += seconds

    jax.monitoring.register_event_listener(event)
    jax.monitoring.register_event_duration_secs_listener(duration)


def stats() -> dict:
    """This process so far: the cache directory, lookups, hits, misses, XLA compiles and their seconds.

    ``compiles`` counts every backend compile (cache misses, and programs not cached); a warm
    run of a command that was run before has ``misses == 0``. ``executables_loaded`` and
    ``executables_saved`` count the trial programs stored whole (``load_or_compile``, below): a loaded
    one is neither traced nor looked up in JAX's cache.
    """
    counts = {
        "dir": _compile_state.get("dir"),
        **_compile_counts,
        "misses": _compile_counts["requests"] - _compile_counts["hits"],
    }
    return counts | executable_stats()


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
    if _compile_state.get("dir", "unset") == target:
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
    _compile_state["dir"] = target
    return target


_CACHE_WARNINGS = (
    "Error reading persistent compilation cache entry",
    "Error writing persistent compilation cache entry",
)


def _one_line_cache_warnings() -> None:
    """JAX warns once per unreadable (corrupt) or unwritable entry, then compiles it: say it once."""
    if _compile_state.get("hooked"):
        return
    _compile_state["hooked"] = "yes"
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if not text.startswith(_CACHE_WARNINGS):
            return show(message, category, filename, lineno, file, line)
        if not _compile_state.get("warned"):
            _compile_state["warned"] = "yes"
            reason = text.split(": ", 1)[-1]
            where = _compile_state.get("dir")
            print(
                f"colora_jax: compile cache {where}: unusable entries are compiled afresh ({reason})",
                file=sys.stderr,
            )

    warnings.showwarning = showwarning


def cache_dir() -> str | None:
    """The directory ``enable_compile_cache`` set up in this process (None: off or never enabled)."""
    return _compile_state.get("dir")


# Trial programs stored whole.

SUBDIR = "colora_executables"
FORMAT = 3  # part of every key: entries written by an older layout (or the bugs above) are never read
MAX_BYTES = 2 * 2**30  # beyond this the least recently used entries are deleted (each is about 1 MB)
_executable_counts = {"executables_loaded": 0, "executables_saved": 0}
_executable_state: dict[str, bool] = {}


def executable_stats() -> dict:
    """Executables loaded from and saved to the cache by this process."""
    return dict(_executable_counts)


@functools.cache
def source_fingerprint() -> str:
    """sha256 over the colora_jax package's Python sources (names and contents)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _environment() -> str:
    import jax
    import jaxlib
    from jax._src import compiler, config

    from colora_jax._src.runtime.cpu_threads import available_cores

    device = jax.devices()[0]
    # XLA's compile options: debug options from XLA_FLAGS, jax_disable_most_optimizations, ...
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1).SerializeAsString()
    return repr(
        (
            jax.__version__,
            jaxlib.__version__,
            device.platform,
            device.client.platform_version,
            device.device_kind,
            jax.device_count(),
            jax.process_count(),
            len(available_cores()),
            os.environ.get("XLA_FLAGS", ""),
            hashlib.sha256(options).hexdigest(),
            config.trace_context(),
        )
    )


def default_placement() -> tuple:
    """The placement of an unsharded program: this process's default device (platform and id)."""
    import jax

    device = jax.local_devices()[0]
    return ("device", device.platform, device.id)


def mesh_placement(mesh) -> tuple:
    """The placement of a program sharded over ``mesh``: its device ids, axis names and shape."""
    return ("mesh", tuple(int(d.id) for d in mesh.devices.flat), tuple(mesh.axis_names), tuple(mesh.devices.shape))


def entry_path(name: str, parts: tuple, placement: tuple | None = None) -> pathlib.Path | None:
    """Where the executable for ``parts`` lives (None: the cache is off or the key is unstable).

    ``placement`` (``default_placement()`` when None, or ``mesh_placement(mesh)``) is part of the
    key, so a program is never looked up for devices other than the ones it was compiled for.
    """
    root = cache_dir()
    if root is None:
        return None
    placement = default_placement() if placement is None else placement
    text = repr((FORMAT, name, parts, placement, source_fingerprint(), _environment()))
    if " at 0x" in text:  # an object printed with its address: not the same key in another process
        return None
    return pathlib.Path(root) / SUBDIR / f"{name}-{hashlib.sha256(text.encode()).hexdigest()}.pkl"


def _prepare_backend() -> None:
    """Initialize what lowering would have (the CPU LAPACK kernels) before running a loaded program."""
    if _executable_state.get("prepared"):
        return
    import jax

    if jax.default_backend() == "cpu":
        import numpy as np
        from jax._src.lib import lapack

        lapack.prepare_lapack_call("potrf_ffi", np.dtype(np.float32))  # initializes the LAPACK table
    _executable_state["prepared"] = True


def _warn_once(path: pathlib.Path, err: Exception) -> None:
    if not _executable_state.get("warned"):
        _executable_state["warned"] = True
        print(
            f"colora_jax: compiled program {path.name} could not be loaded ({type(err).__name__}: {err});"
            " compiling it afresh",
            file=sys.stderr,
        )


def load_or_compile(name: str, parts: tuple, lower: Callable, placement: tuple | None = None):
    """The compiled program for ``parts``: loaded from the cache, or ``lower().compile()`` (then saved).

    ``parts`` must determine the program completely, given the source, JAX and backend (which
    the key adds); ``placement`` says where it runs (``entry_path``); ``lower()`` returns the
    ``jax.stages.Lowered`` to compile on a miss. A loaded program runs on the devices and with
    the input and output shardings it was compiled with.
    """
    path = entry_path(name, parts, placement)
    if path is not None and path.exists():
        try:
            compiled = _load(path)
            _executable_counts["executables_loaded"] += 1
            _touch(path)
            return compiled
        except Exception as err:  # a corrupt, damaged or foreign entry: compile instead
            _warn_once(path, err)
    if path is None:
        return lower().compile()
    with _fresh_compile():
        compiled = lower().compile()
    try:
        _save(path, compiled)
        _executable_counts["executables_saved"] += 1
        evict(path.parent)
    except Exception:  # not serializable here, or not writable: the program still runs
        pass
    return compiled


def _placement_of(compiled) -> tuple:
    """The device ids a compiled program runs on, and its input and output shardings as text."""
    devices = tuple(int(d.id) for d in compiled.runtime_executable().local_devices())
    return devices, repr(compiled.input_shardings), repr(compiled.output_shardings)


def _save(path: pathlib.Path, compiled) -> None:
    """Write ``compiled`` with its placement, under a digest of the payload, atomically."""
    from jax.experimental import serialize_executable

    payload = pickle.dumps((serialize_executable.serialize(compiled), _placement_of(compiled)))
    data = hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload  # the digest, then what it covers
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)  # atomic: a concurrent reader sees the whole entry or none


class DamagedEntry(Exception):
    """A stored program whose content does not match its digest or its recorded placement."""


def _load(path: pathlib.Path):
    """The program stored at ``path``, bound to the devices it was compiled for.

    Raises ``DamagedEntry`` when its digest or placement does not match.
    """
    import jax
    from jax.experimental import serialize_executable

    digest, _, payload = path.read_bytes().partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise DamagedEntry("its content does not match its sha256 digest")
    (blob, in_tree, out_tree), placement = pickle.loads(payload)
    by_id = {d.id: d for d in jax.devices()}
    if any(i not in by_id for i in placement[0]):
        raise DamagedEntry(f"it was compiled for devices {placement[0]}, not all visible here")
    _prepare_backend()
    devices = [by_id[i] for i in placement[0]]
    compiled = serialize_executable.deserialize_and_load(blob, in_tree, out_tree, execution_devices=devices)
    if _placement_of(compiled) != placement:
        raise DamagedEntry(f"it loaded with another placement than it was compiled for ({placement})")
    return compiled


@contextlib.contextmanager
def _fresh_compile():
    """Compile without JAX's persistent cache, whose loaded executables cannot be stored again."""
    from jax._src import compilation_cache, config

    compilation_cache.reset_cache()  # JAX decides once per process whether its cache is used
    try:
        with config.enable_compilation_cache(False):
            yield
    finally:
        compilation_cache.reset_cache()


def _touch(path: pathlib.Path) -> None:
    try:
        os.utime(path)  # last use, for eviction (atime is often not kept)
    except OSError:
        pass


def evict(folder: pathlib.Path, max_bytes: int = MAX_BYTES) -> int:
    """Delete the least recently used entries until ``folder`` holds at most ``max_bytes``.

    Returns how many were deleted. Every source edit gives new keys, so old entries would only
    accumulate.
    """
    entries = []
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name.endswith(".pkl"):
            stat = entry.stat()
            entries.append((stat.st_mtime, stat.st_size, entry.path))
    total, deleted = sum(size for _, size, _ in entries), 0
    for _, size, name in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.remove(name)
            total, deleted = total - size, deleted + 1
        except OSError:
            pass
    return deleted
