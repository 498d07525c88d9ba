"""The one job runner every widget that computes goes through, and its concurrency rule.

A widget owns one :class:`Runner`. ``runner.submit(work, apply)`` asks for one computation:

- **Latest request wins.** A newer ``submit`` supersedes the older job: the older result is
  never applied, a job still waiting never starts, and a job under way stops at its next
  progress report (``job.progress`` raises :class:`~zfwidgets.base.progress.Cancelled`; engine
  functions take it as ``progress=``). A job may give a ``key`` (what its expensive part
  depends on, e.g. the checkpoint being mined): a newer job with the same key lets it run to
  the end, and only its result is dropped.
- **Work runs off the calling thread**, in the runner's worker thread (one at a time per
  runner; started on demand, gone when idle), so the kernel stays free for the front end.
- **Results are applied on the owner's thread, never on the worker.** With an asyncio event
  loop running where ``submit`` was called (the kernel's loop in Jupyter, JupyterLab,
  Notebook 7, Voila and nbclient), the outcome is applied by a callback on that loop, in the
  order the jobs finished. Without a loop (plain Python, a test), outcomes wait in the
  runner's outbox and are applied, in the same order, by :meth:`Runner.join` (the widgets'
  ``wait()``), by :meth:`Runner.flush`, or by the next ``submit``. ``submit(..., wait=True)``
  makes a call synchronous where no loop runs: it returns once the outcome is applied (or
  raises its error). Either way no trait is ever set from a worker thread.
- **Errors are shown in the widget**: the ``error`` callback receives the exception on the
  owner's thread; nothing is printed.

``job.post(fn, *args)`` sends an intermediate update (progress, a status) the same way: it is
applied on the owner's thread while the job is still the latest, in order with its outcome.

``runner.post(fn, *args)`` is the same rule for updates that come from no job but from
another thread of the user's (a training loop in a thread calling the training monitor): the
owner's loop is the one running where the runner was made (the kernel's, when a widget is
made in a cell). Called on that loop's thread, or where no loop runs (plain Python, a test,
a loop that has stopped), ``fn`` is applied at once, inline, after the outcomes already
delivered; called from another thread while the loop runs, it is applied by a callback on
the loop, in order with the jobs' outcomes. A newer ``submit`` never drops it; ``close`` does.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from ..base.progress import Cancelled

__all__ = ["Cancelled", "Job", "Runner", "running_loop"]

#: Every worker thread started, joined at interpreter exit (a daemon thread killed inside a
#: torch kernel can abort the process).
_WORKERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread (the kernel's in Jupyter), or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def start_worker(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread tracked so that the interpreter waits for it at exit."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    _WORKERS.add(thread)
    thread.start()
    return thread


@atexit.register
def _join_workers(timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in list(_WORKERS):
        thread.join(max(0.0, deadline - time.monotonic()))


_UNSET: Any = object()


class Job:
    """One request: the work, what to do with its result, and its state.

    Widgets may keep their own fields on it (a frame, a count of forwards).
    """

    def __init__(
        self,
        runner: Runner,
        generation: int,
        work: Callable[[Job], Any],
        apply: Callable[[Any], None] | None,
        error: Callable[[BaseException], None] | None,
        key: Hashable,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.runner = runner
        self.generation = generation
        self.work = work
        self.apply = apply
        self.error_handler = error
        self.key = key
        self.loop = loop
        self.result: Any = _UNSET
        self.error: BaseException | None = None
        self.cancelled = False  # stopped before its end (superseded or closed)
        self.delivered = False  # its outcome was applied
        self.done = threading.Event()
        self._last_report = 0.0

    @property
    def superseded(self) -> bool:
        """A newer request (or closing the widget) made this job's result unwanted."""
        r = self.runner
        return r.closed or r.generation != self.generation

    def stop_requested(self) -> bool:
        """Whether the work should stop now: superseded, and the newer job does not need what
        this one computes (a different ``key``, or no key)."""
        r = self.runner
        if r.closed:
            return True
        if r.generation == self.generation:
            return False
        latest = r.latest
        return self.key is None or latest is None or latest.key != self.key

    def check(self) -> None:
        """Raise :class:`Cancelled` when the work should stop (see :meth:`stop_requested`)."""
        if self.stop_requested():
            raise Cancelled()

    def progress(self, done: int, total: int) -> None:
        """The engine's ``progress=`` callback: stops a superseded job, reports the fraction
        (at most every ``runner.progress_every_s`` seconds, and at the end)."""
        self.check()
        on_progress = self.runner.on_progress
        if on_progress is None:
            return
        now = time.monotonic()
        if done >= total or now - self._last_report >= self.runner.progress_every_s:
            self._last_report = now
            self.post(on_progress, min(1.0, done / max(1, total)))

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Apply ``fn(*args)`` on the owner's thread, while this job is still the latest."""
        self.runner._deliver(self, fn, args)


class Runner:
    """A widget's job runner (see the module docstring for the rule it implements).

    Parameters
    ----------
    name : str
        Names the worker thread.
    on_progress : callable(fraction), optional
        Applied on the owner's thread with each progress report of the latest job.
    progress_every_s : float
        Least time between two progress reports of one job.
    """

    def __init__(
        self,
        name: str,
        *,
        on_progress: Callable[[float], None] | None = None,
        progress_every_s: float = 0.1,
    ) -> None:
        self.name = name
        #: the owner's loop: the one running where the runner was made (None: plain Python)
        self.loop = running_loop()
        self.on_progress = on_progress
        self.progress_every_s = progress_every_s
        self.generation = 0
        self.closed = False
        self.latest: Job | None = None
        #: the last worker thread started (kept after it ends, for tests and ``join``)
        self.thread: threading.Thread | None = None
        self._cond = threading.Condition(threading.RLock())
        self._pending: Job | None = None
        self._running: Job | None = None
        self._worker_alive = False  # set and cleared under the lock, unlike Thread.is_alive
        self._outbox: collections.deque[tuple[Job | None, Callable[..., None] | None, tuple]] = (
            collections.deque()
        )

    # -- the owner's side --------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a job is waiting, running, or finished but not yet applied."""
        with self._cond:
            return bool(self._pending or self._running or self._outbox)

    def submit(
        self,
        work: Callable[[Job], Any],
        apply: Callable[[Any], None] | None = None,
        *,
        error: Callable[[BaseException], None] | None = None,
        key: Hashable = None,
        wait: bool = False,
    ) -> Job:
        """Run ``work(job)`` in the worker thread; apply ``apply(result)`` (or
        ``error(exception)``) on this thread if it is still the latest request.

        With ``wait=True`` and no event loop running here, block until the outcome is applied
        and re-raise its error: the call behaves as if it ran inline.
        """
        self.flush()
        loop = running_loop()
        with self._cond:
            if self.closed:
                raise RuntimeError(f"{self.name}: the widget is closed")
            self.generation += 1
            job = Job(self, self.generation, work, apply, error, key, loop)
            if self._pending is not None:  # never started: dropped
                self._pending.cancelled = True
                self._pending.done.set()
            self._pending = job
            self.latest = job
            if not self._worker_alive:
                self._worker_alive = True
                self.thread = start_worker(self._work, self.name)
            self._cond.notify_all()
        if wait and loop is None:
            self.join()
            if job.error is not None:
                raise job.error
        return job

    def supersede(self) -> None:
        """Drop the current request: its result is not applied, its work stops at its next
        progress report (whatever its key)."""
        with self._cond:
            self.generation += 1
            self.latest = None
            if self._pending is not None:
                self._pending.cancelled = True
                self._pending.done.set()
                self._pending = None
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job is waiting or running, then apply every outcome (on this thread).

        Works with or without an event loop (with one, it blocks the loop: outcomes are
        applied here instead of by the loop's callback). Returns False when ``timeout``
        seconds ran out first (what arrived is applied all the same).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        with self._cond:
            while self._pending is not None or self._running is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    ok = False
                    break
                self._cond.wait(left)
        self.flush()
        return ok

    def flush(self) -> None:
        """Apply the updates and outcomes delivered so far, in order (no waiting)."""
        while True:
            with self._cond:
                if not self._outbox:
                    return
                job, fn, args = self._outbox.popleft()
            self._apply(job, fn, args)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Apply ``fn(*args)`` on the owner's thread, whatever thread calls (see the module
        docstring): by a callback on the owner's loop when called from another thread while
        it runs, otherwise now, inline, after the outcomes already delivered. Dropped once
        the runner is closed."""
        with self._cond:
            if self.closed:
                return
            self._outbox.append((None, fn, args))
        loop = self.loop
        if loop is not None and running_loop() is not loop and loop.is_running():
            try:
                loop.call_soon_threadsafe(self.flush)
                return
            except RuntimeError:  # the loop closed meanwhile: no loop runs, apply here
                pass
        self.flush()

    def close(self) -> None:
        """Stop: nothing more is applied; the job under way stops at its next progress report."""
        with self._cond:
            self.closed = True
            self.generation += 1
            if self._pending is not None:
                self._pending.cancelled = True
                self._pending.done.set()
                self._pending = None
            self._outbox.clear()
            self._cond.notify_all()

    # -- applying (owner's thread) -----------------------------------------------------------
    def _apply(self, job: Job | None, fn: Callable[..., None] | None, args: tuple) -> None:
        if job is None:  # runner.post: no job to supersede it
            fn(*args)
            return
        if job.superseded:
            return
        if fn is not None:  # an intermediate update, always before the outcome
            if not job.delivered:
                fn(*args)
            return
        if job.delivered:
            return
        job.delivered = True
        if job.error is not None:
            if job.error_handler is not None:
                job.error_handler(job.error)
        elif job.apply is not None:
            job.apply(job.result)

    def _deliver(self, job: Job, fn: Callable[..., None] | None, args: tuple) -> None:
        with self._cond:
            if self.closed:
                return
            self._outbox.append((job, fn, args))
        if job.loop is not None:
            # a closed loop raises RuntimeError: join() applies the outcome then
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(self.flush)

    # -- the worker's side -------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._pending
                self._pending = None
                if job is None or self.closed:
                    self._running = None
                    self._worker_alive = False
                    self._cond.notify_all()
                    return
                self._running = job
            try:
                job.result = job.work(job)
            except Cancelled:
                job.cancelled = True
            except BaseException as exc:  # shown in the widget by the error callback
                job.error = exc
            finally:
                with self._cond:
                    self._running = None
                    job.done.set()
                    if not job.cancelled:
                        self._deliver(job, None, ())
                    self._cond.notify_all()
