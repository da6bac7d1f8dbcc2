"""MAT-SED/PMAM fine-tuning loss against a float64 numpy transcription of the formula."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.objectives.sed import mean_teacher_at_loss


def _bce(p, y):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _masked_mean(per_example, mask):
    return per_example[mask].mean() if mask.any() else 0.0


@pytest.mark.parametrize("weak_subset_only", [False, True])
def test_matches_numpy_formula(weak_subset_only):
    rng = np.random.default_rng(0)
    b, t, k = 6, 7, 3
    stu = {"strong": rng.uniform(size=(b, t, k)), "weak": rng.uniform(size=(b, k)), "weak_at": rng.uniform(size=(b, k))}
    tch = {"strong": rng.uniform(size=(b, t, k)), "weak": rng.uniform(size=(b, k)), "weak_at": rng.uniform(size=(b, k))}
    batch = {"strong": (rng.uniform(size=(b, t, k)) > 0.5).astype(float),
             "weak": (rng.uniform(size=(b, k)) > 0.5) * 1.0,
             "has_strong": np.array([1, 1, 0, 0, 0, 0], bool), "has_weak": np.array([1, 1, 1, 1, 0, 0], bool)}
    w_cons, ww, wa = 3.0, 0.5, 2.0
    strong = _masked_mean(_bce(stu["strong"], batch["strong"]).mean(axis=(1, 2)), batch["has_strong"])
    # the reference's clip losses see the weak subset only: rows 2 and 3 (0 and 1 are strong clips)
    weak_rows = np.array([0, 0, 1, 1, 0, 0], bool) if weak_subset_only else batch["has_weak"]
    weak = _masked_mean(_bce(stu["weak"], batch["weak"]).mean(axis=1), weak_rows)
    at = _masked_mean(_bce(stu["weak_at"], batch["weak"]).mean(axis=1), weak_rows)
    c_strong = ((stu["strong"] - tch["strong"]) ** 2).mean()
    c_weak = ((stu["weak"] - tch["weak_at"]) ** 2).mean()
    c_at = ((stu["weak_at"] - tch["weak_at"]) ** 2).mean()
    expected = strong + ww * weak + wa * at + w_cons * (c_strong + ww * c_weak + wa * c_at)

    as_jax = lambda d: {key: jnp.asarray(v, jnp.float32 if v.dtype != bool else bool) for key, v in d.items()}  # noqa: E731
    loss, aux = mean_teacher_at_loss(as_jax(stu), as_jax(tch), as_jax(batch), w_cons, weak_weight=ww, at_weight=wa,
                                     weak_subset_only=weak_subset_only)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(aux["at_bce"]) == pytest.approx(at, rel=1e-5)
    assert float(aux["cons_weak_mse"]) == pytest.approx(c_weak, rel=1e-5)
