"""Store comparisons shared by the tests: two stores holding bit-identical features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedx.store import StoreReader


def assert_same_features(a_path: Path, b_path: Path, *, same_sets: bool = True) -> None:
    """Assert that the stores hold the same items and, for every feature set of ``a`` (all of
    ``b``'s too with ``same_sets``), all done, bit-identical pooled arrays, frame offsets and frames."""
    with StoreReader(a_path) as a, StoreReader(b_path) as b:
        assert a.items["id"].tolist() == b.items["id"].tolist()
        if same_sets:
            assert a.feature_sets() == b.feature_sets()
        for name in a.feature_sets():
            assert a.done(name).all() and b.done(name).all()
            for pooling in a.spec(name).poolings:
                for layer in a.spec(name).layers:
                    np.testing.assert_array_equal(a.pooled(name, pooling, layer), b.pooled(name, pooling, layer))
            np.testing.assert_array_equal(a.frame_offsets(name), b.frame_offsets(name))
            for i in range(a.num_items):
                np.testing.assert_array_equal(a.frames(name, i), b.frames(name, i))
