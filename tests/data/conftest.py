"""A non-audio Source (random feature vectors with class labels), to show the data layer is task-neutral."""
import numpy as np
import pytest


class VectorSource:
    """n items {"x": (dim,) float32, "label": int32, "weights": (2, 2) float64,
    "flag": bool, "index": int32}."""

    def __init__(self, n: int, dim: int = 5, n_classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((n, dim)).astype(np.float32)
        self.labels = rng.integers(0, n_classes, n).astype(np.int32)
        self.weights = rng.uniform(0, 1, (n, 2, 2)).astype(np.float64)
        self.dim = dim

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        index = int(index)
        return {"x": self.x[index].copy(), "label": self.labels[index], "weights": self.weights[index].copy(),
                "flag": np.bool_(index % 2), "index": np.int32(index)}

    def batch_spec(self):
        return {"x": ((self.dim,), np.dtype(np.float32)), "label": ((), np.dtype(np.int32)),
                "weights": ((2, 2), np.dtype(np.float64)), "flag": ((), np.dtype(np.bool_)),
                "index": ((), np.dtype(np.int32))}

    def padding_item(self):
        from jaxaudio.data.source import padding_from_spec

        return padding_from_spec(self.batch_spec())


@pytest.fixture
def vector_source():
    """Factory: vector_source(n, dim=5, n_classes=3, seed=0) -> a toy Source."""
    return VectorSource
