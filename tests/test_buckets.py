"""Index buckets packed as text and unpacked again: every key, however awkward, keeps its ids."""

from __future__ import annotations

import random

from crmkit.store.buckets import find_packed, ids_of, packed, unpacked


def test_a_bucket_survives_packing_and_unpacking_with_awkward_keys() -> None:
    rng = random.Random(3)
    keys = [f"<m{i}@x.example>" for i in range(300)] + ["50%", "tab\there", "new\nline", "%09", "ünï"]
    bucket = {
        "active": {key: [f"ACT-{rng.randint(1, 10**6)}" for _ in range(rng.randint(1, 3))] for key in keys},
        "archived": {"<old@x.example>": ["ACT-1"]},
    }
    text = packed(bucket)
    again = unpacked(text)
    for side in ("active", "archived"):
        assert sorted(again[side]) == sorted(bucket[side])
        for key, ids in bucket[side].items():
            assert ids_of(again[side][key]) == ids == find_packed(text[side], key)
    assert packed(again) == text  # unpacked entries pack back to the same text
    assert find_packed(text["active"], "<absent@x.example>") == [] and ids_of(None) == []
