"""The widgets' job runner: latest request wins, work off the calling thread, outcomes applied
on the owner's thread (the event loop's, or by join/flush where no loop runs), errors handed to
the widget; and the widgets never set a trait from a worker thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from models import tiny_zf

from zfwidgets.base.progress import Cancelled
from zfwidgets.widgets import LayerGrid, OcclusionMap, Predictions, TopNine
from zfwidgets.widgets._jobs import Runner


def test_no_loop_outcomes_wait_for_join_in_order():
    r = Runner("test")
    applied = []
    gate = threading.Event()
    r.submit(lambda job: gate.wait(10) and 1, applied.append)
    assert r.busy and applied == []
    gate.set()
    assert r.join(10)
    assert applied == [1] and not r.busy


def test_latest_request_wins_and_a_waiting_job_never_starts():
    r = Runner("test")
    started, applied = [], []
    gate, entered = threading.Event(), threading.Event()

    def slow(job):
        started.append("slow")
        entered.set()
        gate.wait(10)
        return "slow"

    r.submit(slow, applied.append)
    assert entered.wait(10)  # running: the next two wait behind it
    r.submit(lambda job: started.append("middle") or "middle", applied.append)
    r.submit(lambda job: started.append("last") or "last", applied.append)
    gate.set()
    r.join(10)
    assert started == ["slow", "last"] and applied == ["last"]


def test_superseded_work_stops_at_its_next_progress_unless_the_key_matches():
    r = Runner("test")
    reached = []
    gate, entered = threading.Event(), threading.Event()

    def work(job):
        for i in range(3):
            job.progress(i + 1, 3)
            reached.append((job.key, i))
            if i == 0:
                entered.set()
                gate.wait(10)
        return job.key

    out = []
    r.submit(work, out.append, key="a")
    assert entered.wait(10)
    r.submit(lambda job: "b", out.append, key="b")  # another key: "a" stops
    gate.set()
    r.join(10)
    assert reached == [("a", 0)] and out == ["b"]
    reached.clear()
    gate.clear()
    entered.clear()
    r.submit(work, out.append, key="c")
    assert entered.wait(10)
    r.submit(lambda job: "c2", out.append, key="c")  # same key: "c" runs to its end
    gate.set()
    r.join(10)
    assert reached == [("c", 0), ("c", 1), ("c", 2)] and out == ["b", "c2"]


def test_errors_go_to_the_error_callback_and_wait_reraises():
    r = Runner("test")
    seen = []

    def boom(job):
        raise ValueError("bad")

    r.submit(boom, seen.append, error=lambda e: seen.append(repr(e)))
    r.join(10)
    assert seen == ["ValueError('bad')"]
    with pytest.raises(ValueError, match="bad"):
        r.submit(boom, seen.append, error=lambda e: None, wait=True)
    # Cancelled is not an error
    r.submit(lambda job: (_ for _ in ()).throw(Cancelled()), seen.append, error=seen.append)
    r.join(10)
    assert len(seen) == 1


def test_with_a_loop_outcomes_and_progress_apply_on_the_loop_thread():
    threads = []
    r = Runner("test", on_progress=lambda f: threads.append(("progress", f)))

    def work(job):
        for i in range(3):
            job.progress(i + 1, 3)
        return threading.current_thread()

    async def scenario():
        done = asyncio.Event()

        def apply(worker):
            threads.append(("apply", worker is not threading.current_thread()))
            done.set()

        r.submit(work, apply)
        await asyncio.wait_for(done.wait(), 10)
        return threading.current_thread()

    loop_thread = asyncio.run(scenario())
    assert loop_thread is threading.main_thread()
    assert threads[-1] == ("apply", True) and ("progress", 1.0) in threads


def test_close_drops_everything():
    r = Runner("test")
    out = []
    gate = threading.Event()
    r.submit(lambda job: gate.wait(10) or job.progress(1, 1) or 1, out.append)
    r.close()
    gate.set()
    r.join(10)
    assert out == [] and r.closed
    with pytest.raises(RuntimeError, match="closed"):
        r.submit(lambda job: 1, out.append)


def test_widgets_set_traits_only_on_the_loop_thread():
    """Every trait change of every widget that computes, in a running loop (as in a kernel),
    happens on the loop's thread."""
    model = tiny_zf()
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changes: list[tuple[str, str, bool]] = []

    def watch(w):
        def record(change):
            on_main = threading.current_thread() is threading.main_thread()
            changes.append((type(w).__name__, change.name, on_main))

        w.observe(record)
        return w

    async def scenario():
        grid = watch(LayerGrid(model, images[0]))
        preds = watch(Predictions(model, images[0]))
        occ = watch(OcclusionMap(model, images[0], window=8, stride=4))
        top = watch(TopNine(model, images, layer="4", channel=1, k=4))
        grid.layer = "7"
        grid.set_image(images[1])
        preds.set_image(images[2])
        occ.set_image(images[3])
        top.channel = 2
        for _ in range(2000):
            if not any(w._runner.busy for w in (grid, preds, occ, top)):
                break
            await asyncio.sleep(0.01)
        return grid, preds, occ, top

    grid, preds, occ, top = asyncio.run(scenario())
    assert top.frame["channel"] == 2 and occ.result is not None and grid.frame["layer"] == "7"
    assert {name for name, _, _ in changes} == {
        "LayerGrid",
        "Predictions",
        "OcclusionMap",
        "TopNine",
    }
    assert all(on_main for _, _, on_main in changes), [c for c in changes if not c[2]]


def test_post_from_another_thread_applies_on_the_loop_in_order():
    """runner.post: updates that come from no job (a training thread) are applied by the
    owner's loop, in order with the jobs' outcomes; on the loop's thread, at once."""
    applied: list[tuple[object, int]] = []

    async def scenario():
        r = Runner("test")  # made where the loop runs: the loop is the owner's
        loop_ident = threading.get_ident()
        done = asyncio.Event()

        def record(x):
            applied.append((x, threading.get_ident()))
            if x == "last":
                done.set()

        def poster():
            for i in range(5):
                r.post(record, i)
            r.post(record, "last")

        t = threading.Thread(target=poster)
        t.start()
        t.join()  # nothing applied yet: the loop has not run since
        queued = list(applied)
        await asyncio.wait_for(done.wait(), 10)
        r.post(record, "inline")  # on the loop's thread: applied now
        inline = applied[-1]
        r.close()
        r.post(record, "closed")
        return loop_ident, queued, inline

    loop_ident, queued, inline = asyncio.run(scenario())
    assert queued == []
    assert [x for x, _ in applied] == [0, 1, 2, 3, 4, "last", "inline"]
    assert {ident for _, ident in applied} == {loop_ident} and inline[0] == "inline"


def test_post_without_a_loop_applies_inline_on_the_caller():
    r = Runner("test")
    applied = []

    def poster():
        r.post(lambda: applied.append(threading.get_ident()))
        applied.append("after")

    t = threading.Thread(target=poster)
    t.start()
    t.join()
    assert applied == [t.ident, "after"]
    # a loop that has ended counts as no loop
    r2 = asyncio.run(_make_runner())
    r2.post(lambda: applied.append("ended"))
    assert applied[-1] == "ended"


async def _make_runner() -> Runner:
    return Runner("test")
