"""How the ``colora`` process ends on SIGINT: one line on stderr and exit code 130, at any moment.

Three moments need care. While the package loads (about a second of importing JAX), Python's
default handler would raise KeyboardInterrupt inside some import and print its traceback:
``guard_command_start`` ends the process at once instead, since nothing has started: it runs
when this module is imported, which ``colora_jax/__init__`` does first of all, and acts only in
the ``colora`` command's process (a library user's handlers are left alone).
While a command runs, ``interrupting`` raises KeyboardInterrupt so that ``finally`` blocks run
(a sweep's workers are ended, a results file stays whole), and remembers it: code that swallows
the exception (a ``__del__``, a callback) cannot turn an interrupt into exit code 0. A second
SIGINT, or one after the command returned, ends the process at once.

Python runs a signal handler only when the main thread is between bytecodes, so a main thread
held in a long call into XLA would hold the interrupt back with it. The C-level handler also
writes the signal's number to a pipe (``signal.set_wakeup_fd``) at once; a watch thread reading
it gives the command ``GRACE_SECONDS`` to clean up and end, then ends the process itself (a
results line cut short by that is repaired by the next writer).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

MESSAGE = "colora: interrupted"
EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
GRACE_SECONDS = 5.0  # after a SIGINT, the most a command may take to clean up and end

_state = {"interrupted": False, "reported": False, "finished": threading.Event()}


def command_process() -> bool:
    """Whether this process runs the ``colora`` command (its console script or ``python -m colora_jax.cli``)."""
    argv = getattr(sys, "orig_argv", None) or sys.argv
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "colora_jax.cli":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("colora", "colora.exe")


def report() -> None:
    """Write the line once per interrupted command (straight to the file descriptor: no buffer to flush)."""
    if not _state["reported"]:
        _state["reported"] = True
        try:
            os.write(2, (MESSAGE + "\n").encode())
        except OSError:
            pass


def end_now(signum=None, frame=None) -> None:
    """A SIGINT handler for when nothing needs cleaning up: the line, then exit 130."""
    report()
    os._exit(EXIT_CODE)


def interrupting(signum, frame) -> None:
    """A SIGINT handler while a command runs: KeyboardInterrupt the first time, ``end_now`` after."""
    if _state["interrupted"]:
        end_now()
    _state["interrupted"] = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether a SIGINT arrived since ``start``."""
    return _state["interrupted"]


def _install(handler):
    """Set the SIGINT handler and return the previous one (None off the main thread, where Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


def guard_command_start() -> None:
    """While the package loads in the ``colora`` process, a SIGINT ends it with the line, no traceback."""
    if command_process():
        _install(end_now)


def _watch(read_fd: int, finished: threading.Event) -> None:
    """Wait for a SIGINT's number on the wake-up pipe; unless the command ends within the grace, end the process."""
    try:
        while True:
            numbers = os.read(read_fd, 64)
            if not numbers:  # end-of-file: the command finished
                return
            if signal.SIGINT in numbers:
                break
    finally:
        os.close(read_fd)
    if not finished.wait(GRACE_SECONDS):
        end_now()


def _quiet_interrupts(hook):
    """An unraisable-exception hook that drops the KeyboardInterrupt of our SIGINT (raised in a callback).

    The handler raises in whatever Python code runs, which may be a callback whose exceptions
    cannot propagate (a ``__del__``, XLA's garbage-collection hook): Python would print them,
    but the interrupt is remembered (``interrupted``) and reported once by the command.
    """

    def quiet(unraisable):
        if not (_state["interrupted"] and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            hook(unraisable)

    return quiet


def start():
    """Begin a command: SIGINT raises KeyboardInterrupt (once), and is watched from a thread.

    See the module docstring. Returns what ``finish`` gives back (None off the main thread, where
    nothing is changed).
    """
    finished = threading.Event()
    _state.update(interrupted=False, reported=False, finished=finished)
    previous = _install(interrupting)
    if previous is None:
        return None
    old_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_interrupts(old_hook)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never wait on it
    old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd, finished), name="colora-interrupt", daemon=True).start()
    return previous, old_wakeup, write_fd, old_hook


def finish(started, *, process_ends: bool) -> None:
    """End a command.

    When the process ends with it, a SIGINT from now on ends it at once (no traceback from the
    interpreter's shutdown), and an interrupted command's grace still runs (a shutdown that hangs is
    cut short); else the caller's handler, wake-up descriptor and unraisable hook are put back.
    """
    if process_ends and _state["interrupted"]:
        end_now()  # the command's finally blocks ran: the interpreter's shutdown has nothing left to do
    if started is None:
        return
    previous, old_wakeup, write_fd, old_hook = started
    if process_ends:
        _install(end_now)
        if not _state["interrupted"]:
            _state["finished"].set()
        return
    _state["finished"].set()
    signal.set_wakeup_fd(old_wakeup)
    sys.unraisablehook = old_hook
    _install(previous)
    os.close(write_fd)  # the watch thread sees end-of-file and ends


guard_command_start()
