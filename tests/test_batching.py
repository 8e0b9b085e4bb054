"""amlrun.targets.batching: calls that arrive together become one submission."""

from __future__ import annotations

import threading

import pytest

from amlrun.targets.batching import Batcher


def _submit_all(batcher: Batcher, items: list) -> dict:
    results: dict = {}
    barrier = threading.Barrier(len(items))

    def worker(item):
        barrier.wait()
        try:
            results[item] = batcher.submit(item)
        except Exception as exc:  # recorded for the assertions
            results[item] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_calls_arriving_together_are_one_submission_each_getting_its_own_handle():
    calls: list[list] = []

    def submit_many(items):
        calls.append(list(items))
        return [f"task-{len(calls)}-{i}" for i in range(len(items))]

    batcher = Batcher(submit_many, idle=0.3, window=5)
    results = _submit_all(batcher, list(range(12)))
    assert len(calls) == 1 and sorted(calls[0]) == list(range(12))
    assert sorted(results.values()) == sorted(f"task-1-{i}" for i in range(12))
    assert all(results[item] == f"task-1-{calls[0].index(item)}" for item in results)


def test_keys_and_the_size_limit_split_batches():
    calls: list[list] = []
    lock = threading.Lock()

    def submit_many(items):
        with lock:
            calls.append(list(items))
        return list(items)

    batcher = Batcher(submit_many, key=lambda item: item % 2, idle=0.3, window=5, max_size=4)
    results = _submit_all(batcher, list(range(12)))
    assert results == {i: i for i in range(12)}
    assert all(len({i % 2 for i in call}) == 1 and len(call) <= 4 for call in calls), calls
    assert sorted(i for call in calls for i in call) == list(range(12))


def test_a_failed_submission_reaches_every_item_of_its_batch():
    def submit_many(items):
        raise RuntimeError("sbatch: error: invalid partition")

    results = _submit_all(Batcher(submit_many, idle=0.3, window=5), [1, 2, 3])
    assert all(isinstance(r, RuntimeError) and "invalid partition" in str(r) for r in results.values())


def test_settings_are_checked():
    with pytest.raises(ValueError):
        Batcher(lambda items: items, idle=2, window=1)
