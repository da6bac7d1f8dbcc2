"""PMAM's prototype stage: frame features -> GMM (or k-means) -> soft frame pseudo labels.

Files of round ``r`` (``workdir/round<r>/prototypes/``):
  prototypes.npz     the mixture (weights, means, covariances; PCA if any) and ``prototypes``,
                     the means in feature space that the MLM head is compared with.
  labels_<subset>.npy  posteriors ``(clips, frames, K)`` float16 in the subset's clip order.
  summary (done.json), and ``pseudo_labels.png``: one strong clip's posteriors over its events.
"""
from __future__ import annotations

import io
import zipfile

import jax
import numpy as np

from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.source import eval_batches
from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.io import paths
from jaxaudio.objectives import gmm as gmm_lib
from jaxaudio.objectives import kmeans as kmeans_lib
from jaxaudio.train import stages
from jaxaudio.train.log import get_logger, progress

LOG = get_logger("jaxaudio.pmam")


def subset_features(source: ClipSource, feature_fn, batch_size: int, to_device, desc: str):
    """Yield ``(clip indices, features (rows, frames, dim) numpy)`` over one subset in order."""
    batches = eval_batches(source, batch_size, shard_index=jax.process_index(), shard_count=jax.process_count())
    total = -(-len(source) // batch_size)
    bar = progress(total, desc=desc)
    for batch in batches:
        feats, index = feature_fn(to_device(batch))
        bar.update(1)
        feats, index = np.asarray(feats), np.asarray(index)
        keep = index >= 0
        yield index[keep], feats[keep]
    bar.close()


def sample_frames(sources: dict, feature_fn, cfg, batch_size: int, to_device, seed: int) -> np.ndarray:
    """Every ``frame_stride``-th frame (random phase per clip) of every clip, capped at ``max_gmm_frames``."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, source in sources.items():
        for _, feats in subset_features(source, feature_fn, batch_size, to_device, f"features {name}"):
            for clip in feats:
                rows.append(clip[rng.integers(cfg.frame_stride)::cfg.frame_stride])
    x = np.concatenate(rows).astype(np.float32)
    if len(x) > cfg.max_gmm_frames:
        x = x[np.sort(rng.choice(len(x), cfg.max_gmm_frames, replace=False))]
    return x


class Prototypes:
    """A fitted mixture (soft posteriors) or k-means (one-hot) over frame features."""

    def __init__(self, kind: str, prototypes: np.ndarray, gmm_state=None):
        self.kind = kind
        self.prototypes = np.asarray(prototypes, np.float32)
        self.gmm_state = gmm_state

    def posteriors(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` features -> ``(N, K)`` pseudo labels."""
        if self.kind == "gmm":
            return np.asarray(gmm_lib.predict_proba(self.gmm_state, x))
        return np.asarray(kmeans_lib.one_hot_labels(self.prototypes, x))

    def save(self, path: str) -> None:
        arrays = {"prototypes": self.prototypes, "kind": np.asarray(self.kind)}
        if self.gmm_state is not None:
            s = self.gmm_state
            arrays.update(weights=s.weights, means=s.means, covariances=s.covariances,
                          precisions_cholesky=s.precisions_cholesky, log_likelihood=s.log_likelihood,
                          n_iter=s.n_iter, converged=s.converged)
            if s.pca is not None:
                arrays.update(pca_mean=s.pca.mean, pca_components=s.pca.components,
                              pca_explained_variance=s.pca.explained_variance)
        if jax.process_index() == 0:
            with paths.open_atomic(path, binary=True) as f:
                np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})

    @classmethod
    def load(cls, path: str, *, n_prototypes: int | None = None, dim: int | None = None) -> "Prototypes":
        """Read ``prototypes.npz``; a missing, torn or foreign file (or one whose K or feature
        width differs from the model's) is a ``CheckpointError`` naming the file and the fix."""
        fix = f"delete {paths.join(str(path).rsplit('/', 1)[0], stages.DONE)} to refit the prototypes"
        if not paths.exists(path):
            raise CheckpointError(f"{path}: missing although the prototype stage is marked done; {fix}")
        try:
            with paths.open_read(path, binary=True) as f, np.load(io.BytesIO(f.read())) as z:
                kind = str(z["kind"])
                state = None
                if kind == "gmm":
                    pca = None
                    if "pca_mean" in z:
                        pca = gmm_lib.PCAState(z["pca_mean"], z["pca_components"], z["pca_explained_variance"])
                    state = gmm_lib.GMMState(z["weights"], z["means"], z["covariances"], z["precisions_cholesky"],
                                             z["log_likelihood"], z["n_iter"], z["converged"], pca)
                fitted = cls(kind, z["prototypes"], state)
        except KeyError as err:
            raise CheckpointError(f"{path}: not a prototypes file (no array {err}); {fix}") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path}: cannot be read as a .npz file ({err}); {fix}") from None
        if fitted.kind not in ("gmm", "kmeans"):
            raise CheckpointError(f"{path}: kind {fitted.kind!r} is neither 'gmm' nor 'kmeans'; {fix}")
        shape = fitted.prototypes.shape
        if fitted.prototypes.ndim != 2 or (n_prototypes is not None and shape[0] != n_prototypes) or (
                dim is not None and shape[1] != dim):
            raise CheckpointError(f"{path}: prototypes of shape {shape}, but the model predicts "
                                  f"({n_prototypes}, {dim}) (model.n_prototypes, feature width); {fix}")
        return fitted


def fit_prototypes(x: np.ndarray, cfg, n_prototypes: int, seed: int, mesh=None) -> tuple[Prototypes, dict]:
    """GMM (full covariance; means seeded by k-means++, refined by Lloyd with ``gmm_init='kmeans'``)
    or k-means on ``x (N, D)``; returns it and a summary."""
    if cfg.gmm_kind == "gmm":
        gcfg = gmm_lib.GMMConfig(n_components=n_prototypes, max_iter=cfg.gmm_max_iter, reg_covar=cfg.gmm_reg_covar,
                                 seed=seed, pca_dim=cfg.gmm_pca_dim or None, init=cfg.get("gmm_init", "kmeans++"))
        state = gmm_lib.fit_gmm(x, gcfg, mesh=mesh)
        fitted = Prototypes("gmm", gmm_lib.means_in_input_space(state), state)
        summary = {"log_likelihood": float(state.log_likelihood), "em_iterations": int(state.n_iter),
                   "converged": bool(state.converged), "weights": np.asarray(state.weights).round(4).tolist()}
    elif cfg.gmm_kind == "kmeans":
        km = kmeans_lib.kmeans(x, n_prototypes, seed=seed, max_iter=cfg.gmm_max_iter, mesh=mesh)
        fitted = Prototypes("kmeans", km.centroids)
        summary = {}
    else:
        raise ConfigError(f"pretrain.gmm_kind={cfg.gmm_kind!r}; expected 'gmm' or 'kmeans'")
    summary.update(kind=cfg.gmm_kind, frames=int(len(x)), dim=int(x.shape[1]), n_prototypes=n_prototypes)
    return fitted, summary


def label_subsets(fitted: Prototypes, sources: dict, feature_fn, batch_size: int, to_device, out_dir: str) -> dict:
    """Posteriors of every frame of every clip, saved per subset; returns usage statistics."""
    usage = np.zeros(fitted.prototypes.shape[0])
    for name, source in sources.items():
        labels = None
        for index, feats in subset_features(source, feature_fn, batch_size, to_device, f"pseudo labels {name}"):
            gamma = fitted.posteriors(feats.reshape(-1, feats.shape[-1])).reshape(*feats.shape[:2], -1)
            if labels is None:
                labels = np.zeros((len(source), *gamma.shape[1:]), np.float16)
            labels[index] = gamma
            usage += gamma.sum(axis=(0, 1))
        if jax.process_index() == 0:
            with paths.open_atomic(paths.join(out_dir, f"labels_{name}.npy"), binary=True) as f:
                np.save(f, labels)
    usage = usage / max(usage.sum(), 1.0)
    return {"prototype_usage": usage.round(4).tolist(),
            "usage_entropy_bits": float(-(usage * np.log2(np.maximum(usage, 1e-12))).sum())}


def load_labels(out_dir: str, names, expected: dict[str, tuple[int, int, int]] | None = None) -> dict[str, np.ndarray]:
    """Pseudo labels per subset: memory-mapped from a local folder, read whole from a bucket.

    ``expected``: ``{subset: (clips, frames, K)}``; a missing or unreadable file, or one of
    another shape (other data, model frames or K), is a ``CheckpointError`` naming it."""
    labels = {}
    fix = f"delete {paths.join(out_dir, stages.DONE)} to recompute them"
    for name in names:
        path = paths.join(out_dir, f"labels_{name}.npy")
        if not paths.exists(path):
            raise CheckpointError(f"{path}: pseudo labels missing although {out_dir} is marked done; {fix}")
        try:
            if paths.is_remote(path):
                with paths.open_read(path, binary=True) as f:
                    labels[name] = np.load(io.BytesIO(f.read()))
            else:
                labels[name] = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"{path}: cannot be read as a .npy array ({err}); {fix}") from None
        want = (expected or {}).get(name)
        if want is not None and tuple(labels[name].shape) != tuple(want):
            raise CheckpointError(f"{path}: pseudo labels of shape {tuple(labels[name].shape)}, expected {tuple(want)} "
                                  "(clips, model.frames, model.n_prototypes); the data or the model changed "
                                  f"since they were computed; {fix}")
    return labels


def plot_clip(labels: np.ndarray, source: ClipSource, clip: int, path: str, title: str) -> None:
    """Posteriors of one clip (prototypes x time) above its reference events."""
    if jax.process_index() != 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = source.records[clip]
    seconds = source.encoder.clip_seconds
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.imshow(np.asarray(labels[clip], np.float32).T, aspect="auto", origin="lower", cmap="viridis",
               extent=(0, seconds, -0.5, labels.shape[-1] - 0.5), vmin=0, vmax=1)
    top.set_ylabel("prototype")
    top.set_title(title)
    classes = list(source.encoder.classes)
    for event in record.events or []:
        onset, offset, label = event[0], event[1], event[2]
        bottom.barh(classes.index(label), offset - onset, left=onset, height=0.8)
    bottom.set_yticks(range(len(classes)))
    bottom.set_yticklabels(classes, fontsize=6)
    bottom.set_xlabel("time (s)")
    fig.tight_layout()
    with paths.open_atomic(path, binary=True) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
