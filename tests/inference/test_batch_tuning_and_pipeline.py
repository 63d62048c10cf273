"""The CPU batch-size choice (timed on the prediction's own tiles) and the read/predict/export
pipeline of ``pu-nnunet predict``: order, overlap, and errors as in a single-threaded loop."""

import threading
import time

import pytest

from pu_nnunet.inference.batch_tuning import TIMED_CALLS, UNTIMED_CALLS, BatchSizeTuner
from pu_nnunet.inference.pipeline import STEPS, run_pipelined


def drive(tuner: BatchSizeTuner, seconds_per_patch: dict, patches_left: int = 10_000) -> list[int]:
    """Feeds the tuner the times of a fake network; returns the sizes it asked for."""
    asked = []
    while tuner.chosen is None and patches_left > 0:
        size = tuner.next_size()
        patches = min(size, patches_left)
        asked.append(size)
        tuner.record(size, patches, seconds_per_patch[size] * patches)
        patches_left -= patches
    return asked


def test_the_tuner_keeps_the_fastest_size_per_patch():
    tuner = BatchSizeTuner([1, 2, 4, 8])
    asked = drive(tuner, {1: 0.083, 2: 0.073, 4: 0.079, 8: 0.074})
    assert asked == [size for size in (1, 2, 4, 8) for _ in range(UNTIMED_CALLS + TIMED_CALLS)]
    assert tuner.next_size() == tuner.chosen == 2
    assert tuner.measurements() == pytest.approx({1: 0.083, 2: 0.073, 4: 0.079, 8: 0.074})


def test_the_untimed_first_call_of_a_size_does_not_count():
    """The first call of a new shape pays for kernel selection: a slow first call of batch 1 must
    not make batch 1 lose."""
    tuner = BatchSizeTuner([1, 2])
    tuner.record(1, 1, 5.0)  # untimed warm-up
    for _ in range(TIMED_CALLS):
        tuner.record(1, 1, 0.05)
    for seconds in (9.0, *[0.08] * TIMED_CALLS):
        tuner.record(2, 2, seconds * 2)
    assert tuner.next_size() == 1


def test_candidates_larger_than_a_volume_are_dropped_keeping_the_timings():
    tuner = BatchSizeTuner([1, 2, 4, 8])
    drive(tuner, {1: 0.05, 2: 0.04, 4: 0.03, 8: 0.02}, patches_left=3)  # batch 1 timed, the others not
    tuner.cap(5)
    assert tuner.candidates == [1, 2, 4] and tuner.measurements()[1] == pytest.approx(0.05)
    drive(tuner, {1: 0.05, 2: 0.04, 4: 0.03})
    assert tuner.chosen == 4


def test_a_partial_last_chunk_is_not_timed_and_one_candidate_needs_no_tuning():
    tuner = BatchSizeTuner([4, 8])
    tuner.record(8, 3, 0.001)  # 3 patches in a batch of 8: says nothing about batch 8
    assert tuner.measurements() == {}
    assert BatchSizeTuner([1]).chosen == 1
    with pytest.raises(ValueError, match="positive"):
        BatchSizeTuner([0, 2])


class Recorder:
    """Fake steps: each logs (event, case) and sleeps, so that overlap shows in the log order."""

    def __init__(self, fail: dict | None = None, step_seconds: float = 0.05):
        self.events, self.fail, self.step_seconds = [], fail or {}, step_seconds
        self.lock = threading.Lock()

    def note(self, event, case):
        with self.lock:
            self.events.append((event, case))
        if event in self.fail and self.fail[event] == case:
            raise RuntimeError(f"{event} failed on {case}")

    def read(self, case):
        self.note("read start", case)
        time.sleep(self.step_seconds)
        self.note("read", case)
        return f"volume {case}", f"properties {case}"

    def predict(self, volume):
        case = volume.split()[-1]
        self.note("predict start", case)
        time.sleep(self.step_seconds * 2)
        self.note("predict", case)
        return f"logits {case}"

    def export(self, case, logits, properties):
        assert logits == f"logits {case}" and properties == f"properties {case}"
        self.note("export start", case)
        time.sleep(self.step_seconds)
        self.note("export", case)

    def run(self, cases):
        return run_pipelined(cases, self.read, self.predict, self.export, lambda: self.note("records", None),
                             lambda index, case, seconds: self.note("written", case))


def test_the_next_case_is_read_and_the_last_exported_while_one_is_predicted():
    recorder = Recorder()
    timings = recorder.run(["a", "b", "c"])
    events = recorder.events
    assert [case for event, case in events if event == "written"] == ["a", "b", "c"]
    assert events.index(("records", None)) < events.index(("export start", "a"))
    assert events.count(("records", None)) == 1
    # b is read while a is predicted; a is exported while b is predicted
    assert events.index(("read start", "b")) < events.index(("predict", "a"))
    assert events.index(("export start", "a")) < events.index(("predict", "b"))
    assert set(timings.busy) == set(STEPS) and all(value > 0 for value in timings.busy.values())
    assert len(timings.per_case) == 3 and timings.wall < sum(timings.busy.values())


@pytest.mark.parametrize("failing, written", [(("read", "b"), ["a"]), (("export", "a"), []),
                                              (("predict", "b"), ["a"]), (("read", "a"), [])])
def test_errors_stop_the_run_in_order_and_finish_the_export_under_way(failing, written):
    """As in a single-threaded loop: the failing step's error is raised, every case before it is
    written, nothing after it is."""
    recorder = Recorder(fail=dict([failing]))
    with pytest.raises(RuntimeError, match=f"{failing[0]} failed on {failing[1]}"):
        recorder.run(["a", "b", "c"])
    assert [case for event, case in recorder.events if event == "written"] == written
    exported = [case for event, case in recorder.events if event == "export"]
    assert "c" not in exported and all(case in exported for case in written)
    assert ("predict start", "c") not in recorder.events


def test_no_cases_do_nothing():
    recorder = Recorder()
    timings = recorder.run([])
    assert recorder.events == [] and timings.per_case == []
