"""Quiet by default: the terminal shows argusrank's own output, the libraries' logs go to a file.

:func:`setup` (called by every heavy command) points the process's stdout/stderr file
descriptors at ``<home>/logs/<command>.log``: Ray's C++ and worker logs, MLflow's, Feast's and
Serve's logging, warnings and library prints land there. What stays on the terminal is written
on purpose: :data:`console` (stage headers, tables, URLs), ``sys.stdout`` (the ``--json``
line), progress bars (writes that start with a carriage return, as tqdm's do; the training
bar arrives from the Ray worker through :func:`route_ray_worker_logs`) and tracebacks.
``--verbose`` (or ``ARGUSRANK_VERBOSE=1``) leaves everything on the terminal.
"""
from __future__ import annotations

import io
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import TextIO

from rich.console import Console

ENV_VERBOSE = "ARGUSRANK_VERBOSE"
#: the one console of argusrank's own output (stderr; the terminal in quiet mode)
console = Console(stderr=True)
_TQDM = re.compile(r"\d+%\|")
_state: dict[str, object] = {}


class _SplitStream(io.TextIOBase):
    """``sys.stderr`` in quiet mode: progress-bar writes (leading ``\\r``) to the terminal, the rest to the log."""

    def __init__(self, terminal: TextIO, log: TextIO):
        self.terminal, self.log, self._bar = terminal, log, False

    def write(self, s: str) -> int:
        if s.startswith("\r") or (self._bar and not s.strip()):
            self._bar = "\n" not in s
            self.terminal.write(s)
            self.terminal.flush()
        else:
            self._bar = False
            self.log.write(s)
        return len(s)

    def flush(self) -> None:
        self.terminal.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.log.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"


def active() -> Path | None:
    """The log file when quiet mode is on, else None."""
    return _state.get("path")  # type: ignore[return-value]


def err_stream() -> TextIO:
    """Where messages meant for the user go (the terminal's stderr, also in quiet mode)."""
    return _state.get("term_err") or sys.stderr  # type: ignore[return-value]


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(ENV_VERBOSE, "").lower() in ("1", "true", "yes")


def setup(logs_dir: Path, command: str, verbose: bool = False) -> Path | None:
    """Quiet mode for this process: returns the log file, or None when verbose, already set up, or
    running in-process under a harness that replaced ``sys.stdout``/``sys.stderr`` (pytest, CliRunner)."""
    if verbose_requested(verbose) or active() or sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return active()
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / f"{command.replace(' ', '-')}.log"
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    log.write(f"\n===== argusrank {command} pid {os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
    sys.stdout.flush()
    sys.stderr.flush()
    term_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    term_err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = term_out
    sys.stderr = _SplitStream(term_err, log)
    console.file = term_err
    # MLflow draws a tqdm bar for every artifact download (each model load): noise, not progress
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _state.update(path=path, log=log, term_err=term_err)
    previous = sys.excepthook

    def _excepthook(exc_type, exc, tb):  # a crash is shown on the terminal and kept in the log
        traceback.print_exception(exc_type, exc, tb, file=log)
        sys.stderr = term_err
        previous(exc_type, exc, tb)

    sys.excepthook = _excepthook
    console.print(f"[dim]logs of Ray, MLflow, Feast and Serve: {path} (--verbose shows them here)[/dim]")
    return path


def captured():
    """Context: ``sys.stdout`` to the log in quiet mode (libraries that print), else unchanged."""
    import contextlib

    log = _state.get("log")
    return contextlib.redirect_stdout(log) if log is not None else contextlib.nullcontext()  # type: ignore[arg-type]


def route_ray_worker_logs() -> None:
    """In quiet mode, Ray workers' output (``log_to_driver``) goes to the log file; a worker's tqdm
    progress line (the training bar) is redrawn on the terminal."""
    log = _state.get("log")
    if log is None:
        return
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    term: TextIO = _state["term_err"]  # type: ignore[assignment]

    def _handle(data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or ""
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # as Ray's own printer does: its event summaries, not its status dumps
            lines = [line for line in lines if ":event_summary:" in line]
        for line in lines:
            log.write(f"({who} pid={data.get('pid')}) {line}\n")  # type: ignore[union-attr]
            bar = line.rsplit("\r", 1)[-1].strip()
            if _TQDM.search(bar) and bar != _state.get("last_bar"):
                _state["last_bar"] = bar
                width = max(console.width - 1, 20)
                term.write("\r" + bar[:width].ljust(width) + ("\n" if bar.count("100%|") else ""))
                term.flush()

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("argusrank_logs")
    dispatcher.add_handler("argusrank_logs", _handle)


def link_ray_logs(session_logs: str | Path) -> None:
    """``<logs>/ray`` -> the running Ray session's log folder (raylet, workers, Serve replicas)."""
    path = active()
    if path is None:
        return
    link = path.parent / "ray"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(session_logs), target_is_directory=True)
    except OSError:
        pass
