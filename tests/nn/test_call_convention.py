"""One call convention: ``__call__(x, ..., *, train: bool, rngs=None)`` on every nn / models module."""
import importlib
import inspect
import pkgutil

import pytest
from flax import nnx

import jaxaudio.models
import jaxaudio.nn
from jaxaudio.models.pmam import PMAM

# Layers with no train/eval behaviour that are called like the ``nnx.Linear`` / ``nnx.Conv``
# they are (or wrap): a dense layer with adapters, a gate, the patch conv, one GRU layer, a
# per-channel PReLU, GeCo's ArcFace head (a cosine linear layer; its margin needs labels, not a mode).
LEAF_LAYERS = {"LoRALinear", "Gate", "PatchEmbed", "GRULayer", "PReLU", "ArcFaceHead"}


def _modules():
    found = []
    for package in (jaxaudio.nn, jaxaudio.models):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, cls in vars(module).items():
                if (inspect.isclass(cls) and issubclass(cls, nnx.Module) and cls.__module__ == module.__name__
                        and "__call__" in vars(cls)):
                    found.append(cls)
    return found


def _assert_train_required(fn, *, default=inspect.Parameter.empty):
    params = inspect.signature(fn).parameters
    assert "train" in params, fn.__qualname__
    assert params["train"].kind is inspect.Parameter.KEYWORD_ONLY, fn.__qualname__
    assert params["train"].default is default, fn.__qualname__
    assert params["rngs"].kind is inspect.Parameter.KEYWORD_ONLY and params["rngs"].default is None, fn.__qualname__


MODULES = [cls for cls in _modules() if cls.__name__ not in LEAF_LAYERS]


def test_the_walk_finds_the_modules():
    names = {cls.__name__ for cls in MODULES}
    assert {"CRNN", "CNN", "GRU", "MultiHeadSelfAttention", "MLP", "TransformerBlock", "TransformerEncoder", "ViT",
            "RelPositionMultiHeadAttention", "TransformerXLBlock", "ContextNetwork", "AttentionPool"} <= names


@pytest.mark.parametrize("cls", MODULES, ids=lambda cls: cls.__name__)
def test_call_takes_a_required_keyword_only_train(cls):
    _assert_train_required(cls.__call__)


def test_pmam_entry_points():
    for name in ("encode", "sed_forward", "mam_forward", "context_features"):
        _assert_train_required(getattr(PMAM, name))
    _assert_train_required(PMAM.gmm_features, default=False)  # prototype fitting reads eval-mode features
