"""JSON document behaviour every ObjectStore backend must share."""

from __future__ import annotations

import threading

import pytest

from coordinator.store import ObjectStore


def test_round_trip_and_overwrite(store: ObjectStore) -> None:
    assert store.get_json("modules/site-a/m1.json") is None
    doc = {"a": 1, "nested": {"x": [1, 2.5, "s"]}}
    store.put_json("modules/site-a/m1.json", doc)
    assert store.get_json("modules/site-a/m1.json") == doc
    store.put_json("modules/site-a/m1.json", {"a": 2})
    assert store.get_json("modules/site-a/m1.json") == {"a": 2}


def test_list_is_sorted_and_prefix_filtered(store: ObjectStore) -> None:
    keys = ["nets/n/v000002.json", "modules/b/2.json", "modules/a/1.json", "modules/a/10.json"]
    for key in keys:
        store.put_json(key, {"key": key})
    assert store.list_keys("") == sorted(keys)
    assert store.list_keys("modules/") == sorted(k for k in keys if k.startswith("modules/"))
    assert store.list_keys("modules/a/1") == ["modules/a/1.json", "modules/a/10.json"]
    assert store.list_keys("nothing/") == []


def test_delete(store: ObjectStore) -> None:
    store.put_json("k/doc.json", {"v": 1})
    store.delete_json("k/doc.json")
    assert store.get_json("k/doc.json") is None and store.list_keys("k/") == []
    store.delete_json("k/doc.json")  # absent: ignored


@pytest.mark.parametrize("key", ["", "/abs.json", "a/../b.json", "a//b.json", "./a.json", "a b.json"])
def test_rejects_unsafe_keys(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_json(key, {})


def test_rejects_non_json_values(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.put_json("k/nan.json", {"loss": float("nan")})
    with pytest.raises(TypeError):
        store.put_json("k/list.json", [1, 2])  # type: ignore[arg-type]
    assert store.list_keys("k/") == []


def test_readers_never_see_half_a_document(store: ObjectStore) -> None:
    """A reader racing a writer sees one of the whole documents, never a torn one."""
    big = {str(i): "x" * 200 for i in range(500)}  # ~100 KB: not written in one syscall
    docs = [{"gen": g, **big} for g in range(2)]
    store.put_json("race/doc.json", docs[0])
    stop, seen = threading.Event(), []

    def writer() -> None:
        for gen in range(20):
            store.put_json("race/doc.json", docs[gen % 2])
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        seen.append(store.get_json("race/doc.json"))
    thread.join()
    assert seen and all(doc in docs for doc in seen)
