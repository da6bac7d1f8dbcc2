"""Where a run's data lies: the user's folder, or a built-in set generated on first use.

Why one function: every task (SED, ASD, scenes) offers the same choice with the same checks,
the same refusal when a preset has no built-in set (a paper preset needs the real data), and
the same one-generator-per-process rule, so a fix to one is a fix to all.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Mapping, Optional

from jaxaudio.errors import ConfigError

# The experiments' data modules give this logger its handler (train.log.get_logger); data/ must
# not import train/ itself.
LOG = logging.getLogger("jaxaudio.data")


def user_or_builtin_root(data_cfg, presets: Mapping, ensure: Callable, *, what: str, needs_data: str = "",
                         adapt: Optional[Callable] = None) -> str:
    """``data_cfg.data_dir`` when given (it must be a folder); else the built-in set of preset
    ``data_cfg.synth_preset`` (``presets[name]``, passed through ``adapt``) in ``data_cfg.synth_dir``,
    made by ``ensure(dir, config, progress=...)`` once and reused after. ``needs_data`` is the
    error for an empty synth_preset (a preset that trains on real data only)."""
    import jax

    if data_cfg.data_dir:
        if not os.path.isdir(data_cfg.data_dir):
            raise ConfigError(f"data.data_dir (--data_dir): {data_cfg.data_dir!r} is not a folder")
        return data_cfg.data_dir
    if not data_cfg.synth_preset and needs_data:
        raise ConfigError(needs_data)
    if data_cfg.synth_preset not in presets:
        raise ConfigError(f"data.synth_preset: unknown preset {data_cfg.synth_preset!r}; presets: "
                          f"{', '.join(presets)}")
    synth = presets[data_cfg.synth_preset]
    if adapt is not None:
        synth = adapt(synth)
    LOG.info("%s in %s", what, data_cfg.synth_dir)
    # Every process generates into its own view of the folder only if it is missing; on a shared
    # filesystem the atomic rename makes concurrent generation safe.
    return str(ensure(data_cfg.synth_dir, synth, progress=jax.process_index() == 0))
