"""A (bi)directional multi-layer GRU in NNX, batch-first, with PyTorch's gate equations.

Per direction and time step (PyTorch ``nn.GRU``; gates in the order r, z, n):

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))      # reset gate acts on (W_hn h + b_hn)
    h' = (1 - z) * n + z * h

Parameters of one layer are stacked over directions (d = 0 forward, 1 backward) and stored
transposed relative to PyTorch so that ``x @ w`` works:

    w_ih (dirs, in, 3*hidden) = stack(weight_ih_l{k}.T, weight_ih_l{k}_reverse.T)
    w_hh (dirs, hidden, 3*hidden), b_ih (dirs, 3*hidden), b_hh (dirs, 3*hidden)

Both directions advance in one recurrence (the backward one reads the time-reversed input),
so a bidirectional layer costs T sequential steps, not 2T. The input projection for all
frames is one matmul outside the recurrence. ``unroll=True`` replaces ``lax.scan`` by a
Python loop over frames with the same step function: no while-loop in the graph.
``export_loop=True`` (TFLite export) runs the same step function in a ``lax.while_loop`` that
writes each step into an output buffer computed from the input projection (``0 * xp``):
``lax.scan`` starts its stacked outputs from a zero constant, which the TFLite converter stores
as a dense (time, dirs, batch, hidden) float32 tensor, even in an int8 file.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import as_rngs, torch_uniform


def gru_step(h, xp_t, w_hh, b_hh):
    """One step for all directions: h (dirs, batch, H), xp_t (dirs, batch, 3H) = W_i x + b_i."""
    hp = jnp.einsum("dbh,dhg->dbg", h, w_hh) + b_hh[:, None, :]
    x_r, x_z, x_n = jnp.split(xp_t, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h


def _while_recurrence(h, xp, w_hh, b_hh):
    """``lax.scan(gru_step)``'s stacked states, (time, dirs, batch, H), via a while-loop whose
    output buffer is derived from ``xp`` and so is not a constant of the exported graph."""
    buffer = xp[..., : h.shape[-1]] * 0.0

    def body(carry):
        t, h, buffer = carry
        h = gru_step(h, jax.lax.dynamic_index_in_dim(xp, t, keepdims=False), w_hh, b_hh)
        return t + 1, h, jax.lax.dynamic_update_index_in_dim(buffer, h, t, 0)

    _, _, ys = jax.lax.while_loop(lambda carry: carry[0] < xp.shape[0], body, (jnp.int32(0), h, buffer))
    return ys


class GRULayer(nnx.Module):
    """One GRU layer, one or two directions: (batch, time, in) -> (batch, time, dirs*hidden)."""

    def __init__(self, in_features: int, hidden: int, *, bidirectional: bool = True,
                 unroll: bool = False, export_loop: bool = False, rngs: nnx.Rngs):
        self.hidden = hidden
        self.dirs = 2 if bidirectional else 1
        self.unroll = unroll
        self.export_loop = export_loop
        init = torch_uniform(hidden)  # PyTorch: U(-1/sqrt(hidden), 1/sqrt(hidden)) for all
        g = 3 * hidden
        self.w_ih = nnx.Param(init(rngs.params(), (self.dirs, in_features, g)))
        self.w_hh = nnx.Param(init(rngs.params(), (self.dirs, hidden, g)))
        self.b_ih = nnx.Param(init(rngs.params(), (self.dirs, g)))
        self.b_hh = nnx.Param(init(rngs.params(), (self.dirs, g)))

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, time, _ = x.shape
        w_hh, b_hh = self.w_hh[...], self.b_hh[...]
        xp = jnp.einsum("btf,dfg->dtbg", x, self.w_ih[...]) + self.b_ih[...][:, None, None, :]
        if self.dirs == 2:
            xp = jnp.stack([xp[0], xp[1, ::-1]])
        xp = jnp.moveaxis(xp, 1, 0)  # (time, dirs, batch, 3H)
        h = jnp.zeros((self.dirs, batch, self.hidden), x.dtype)
        if self.unroll:
            outs = []
            for t in range(time):
                h = gru_step(h, xp[t], w_hh, b_hh)
                outs.append(h)
            ys = jnp.stack(outs)
        elif self.export_loop:
            ys = _while_recurrence(h, xp, w_hh, b_hh)
        else:
            def body(carry, xp_t):
                new = gru_step(carry, xp_t, w_hh, b_hh)
                return new, new

            _, ys = jax.lax.scan(body, h, xp)
        # ys: (time, dirs, batch, H) -> per direction (batch, time, H), backward re-reversed.
        ys = jnp.transpose(ys, (1, 2, 0, 3))
        outs = [ys[0]] if self.dirs == 1 else [ys[0], ys[1, :, ::-1]]
        return jnp.concatenate(outs, axis=-1)


class GRU(nnx.Module):
    """Stacked (bi)GRU like ``torch.nn.GRU(batch_first=True)``; zero initial state.

    ``(batch, time, in_features)`` -> ``(batch, time, dirs*hidden)`` (forward features first).
    ``dropout`` is applied to the output of every layer but the last, as in PyTorch.
    """

    def __init__(self, in_features: int, hidden: int, num_layers: int = 1, *,
                 bidirectional: bool = True, dropout: float = 0.0, unroll: bool = False,
                 export_loop: bool = False, rngs: nnx.Rngs):
        if num_layers < 1:
            raise ConfigError(f"rnn_layers={num_layers}; expected at least 1")
        dirs = 2 if bidirectional else 1
        sizes = [in_features] + [dirs * hidden] * (num_layers - 1)
        self.layers = nnx.List([
            GRULayer(n, hidden, bidirectional=bidirectional, unroll=unroll, export_loop=export_loop, rngs=rngs)
            for n in sizes
        ])
        self.dropout_rate = dropout
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """``train``: dropout between layers on (needs ``rngs``)."""
        rngs = as_rngs(rngs)
        needs_rng = train and self.dropout_rate > 0 and len(self.layers) > 1
        if needs_rng and rngs is None:
            raise ConfigError(f"dropout_recurrent={self.dropout_rate} needs `rngs` when train=True")
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(x, deterministic=not train, rngs=rngs)
        return x
