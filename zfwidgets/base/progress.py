"""Progress and cancellation for long engine calls: one small contract shared by all of them.

Every engine function that loops over data (:func:`zfwidgets.mine`, :func:`zfwidgets.engine.occlusion`,
atlas rendering) takes ``progress=``:

- ``True``: a ``tqdm.auto`` bar (a text bar in a terminal, a widget bar in a notebook);
- ``False`` or ``None``: nothing;
- a callable ``progress(done, total)``: called after each step of work with the number of
  items done so far and the total. It may raise (for example :class:`Cancelled`) to stop the
  work: the function cleans up (hooks removed, model flags restored) and re-raises it.

Widgets pass a callable; nobody needs to wrap the user's model or data to observe the work.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "Progress", "ProgressArg", "check_progress"]

ProgressArg = bool | None | Callable[[int, int], object]


class Cancelled(Exception):
    """Raised by a progress callback to stop the work it reports on."""


class Progress:
    """A context manager over a ``progress=`` argument; ``update(n)`` adds ``n`` items done."""

    def __init__(self, progress: ProgressArg, total: int, *, desc: str, unit: str = "it"):
        self.total = int(total)
        self.done = 0
        self._bar = None
        self._callback = None
        if callable(progress):
            self._callback = progress
        elif progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False)

    def update(self, n: int) -> None:
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def set_postfix(self, **kwargs) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kwargs)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_progress(progress: object, name: str = "progress") -> ProgressArg:
    """Validate a ``progress=`` argument: a bool, None, or a callable ``(done, total)``."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise TypeError(
        f"{name}: expected True, False, None or a callable progress(done, total), "
        f"got {type(progress).__name__}"
    )
