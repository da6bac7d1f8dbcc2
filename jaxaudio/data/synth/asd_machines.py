"""Procedural machine sounds, their anomalies and a factory background (the ASD set's sources).

Each machine type is a small signal model whose parameters form an ID's *signature*, drawn
once per (seed, type, ID): fundamentals and harmonic profiles, housing resonances, modulation
and rhythm. A clip draws its *state* (speed and load drift, level, small harmonic changes) from
its own named streams (:class:`Streams`), so an anomaly can change one part of the sound while
everything else comes out sample for sample as in the clip's normal twin.

Anomaly kinds (`ANOMALY_KINDS`), each at a severity in [0, 1] that grades it from mild to clear:

- ``clicks``: bearing impulses, a resonance rung at a few times the shaft rate (a valve chatters);
- ``speed``: the machine runs at the wrong speed, or its speed drifts across the clip;
- ``rattle``: broadband bursts modulated at a rattling rate (something loose);
- ``imbalance``: amplitude modulation at the shaft rate plus its low-frequency rumble;
- ``missing``: a component gone: a harmonic or gear tone, or some of the periodic events
  (pump thumps, slider end-stop impacts, conveyor ticks, a valve's closing: it sticks open);
- ``friction``: a band of scraping noise with a slow envelope, sometimes a squeal.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps

from jaxaudio.data.synth import dsp

MACHINE_TYPES: tuple[str, ...] = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
# DCASE2020 task 2 machine IDs: the development set's first, then the evaluation set's.
MACHINE_IDS: dict[str, tuple[int, ...]] = {
    "fan": (0, 2, 4, 6, 1, 3, 5),
    "pump": (0, 2, 4, 6, 1, 3, 5),
    "slider": (0, 2, 4, 6, 1, 3, 5),
    "valve": (0, 2, 4, 6, 1, 3, 5),
    "ToyCar": (1, 2, 3, 4, 5, 6, 7),
    "ToyConveyor": (1, 2, 3, 4, 5, 6),
}
ANOMALY_KINDS: tuple[str, ...] = ("clicks", "speed", "rattle", "imbalance", "missing", "friction")
# A valve has no shaft to unbalance.
KINDS_BY_TYPE: dict[str, tuple[str, ...]] = {
    t: tuple(k for k in ANOMALY_KINDS if not (t == "valve" and k == "imbalance")) for t in MACHINE_TYPES}


class Streams:
    """Independent generators named under one key: ``streams("background")``.

    A part drawn from its own stream cannot shift another part's draws, so changing one part
    (an anomaly, a component's length) leaves the rest of the clip unchanged.
    """

    def __init__(self, key):
        self.key = [int(k) for k in key]

    def __call__(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self.key + [zlib.crc32(name.encode())])


@dataclass(frozen=True)
class Mods:
    """What a modifying anomaly changes in a machine's rendering (the defaults: nothing)."""

    speed: float = 1.0  # factor on every rate and frequency
    drift: float = 0.0  # extra relative speed change reached at the clip's end
    missing: float = 0.0  # share of the removable component that is gone (1: all of it)
    missing_seed: int = 0  # which periodic events go missing


@dataclass(frozen=True)
class Anomaly:
    kind: str
    severity: float
    params: dict = field(default_factory=dict)


def _log_u(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _profile(rng, n_harmonics: int, lo_exp: float, hi_exp: float) -> np.ndarray:
    k = np.arange(1, n_harmonics + 1)
    return k ** -rng.uniform(lo_exp, hi_exp) * 10 ** (rng.uniform(-5.0, 5.0, n_harmonics) / 20)


def _modes(rng, count: int, lo_hz: float, hi_hz: float) -> list[tuple[float, float, float]]:
    """Resonances as (centre Hz, width in octaves, gain)."""
    return [(_log_u(rng, lo_hz, hi_hz), rng.uniform(0.2, 0.7), rng.uniform(0.5, 3.0)) for _ in range(count)]


def _noise(rng, n, sr, lo_hz, hi_hz, tilt, modes=(), tilt_change=0.0) -> np.ndarray:
    """Unit-RMS noise with a band, a tilt (dB/octave) and resonance bumps."""
    def gain(freqs):
        g = dsp.band_gain(freqs, lo_hz, hi_hz if hi_hz < sr / 2 else None, tilt + tilt_change)
        bumps = 1.0 + sum(a * dsp.band_gain(freqs, c * 2 ** -w, c * 2 ** w) for c, w, a in modes)
        return g * bumps

    x = dsp.filter_fft(rng.standard_normal(n), sr, gain)
    return x / dsp.rms(x)


def _tone(f0_track, amps, sr, rng, gains=None) -> np.ndarray:
    """Harmonics of f0_track at a level fixed by the nominal amps (unit RMS when all present),
    so that a harmonic taken away lowers the level instead of being renormalised back."""
    amps = np.asarray(amps, float)
    scale = 1.0 / np.sqrt(np.sum(amps ** 2) / 2.0)
    jittered = amps * 10 ** (rng.normal(0.0, 1.0, len(amps)) / 20)  # slight harmonic changes per clip
    if gains is not None:
        jittered = jittered * gains
    return scale * dsp.harmonic_tone(f0_track, jittered, sr, rng)


def _phase(rate_hz_track, sr, phase0=0.0) -> np.ndarray:
    """Cycles elapsed at each sample for a time-varying rate."""
    return phase0 + np.cumsum(rate_hz_track) / sr


def _event_indices(phase: np.ndarray) -> np.ndarray:
    """Samples where the cycle count passes a whole number."""
    return np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1


def _keep(count: int, mods: Mods) -> np.ndarray:
    """Which of `count` periodic events survive when a share `mods.missing` goes missing."""
    keep = np.ones(count, bool)
    if mods.missing <= 0 or count == 0:
        return keep
    u = np.random.default_rng(mods.missing_seed).random(count)
    keep = u >= mods.missing
    if keep.all():
        keep[int(np.argmin(u))] = False  # a missing-event anomaly always misses at least one
    return keep


def _ring(sr, modes: list[tuple[float, float]], length_s: float, rng=None) -> np.ndarray:
    """An impulse response: decaying sinusoids (freq Hz, decay time constant s), unit peak."""
    t = np.arange(max(2, int(length_s * sr))) / sr
    x = np.zeros_like(t)
    for i, (freq, tau) in enumerate(modes):
        phase = 0.0 if rng is None else rng.uniform(0, 2 * np.pi)
        x += np.exp(-t / tau) * np.sin(2 * np.pi * min(freq, 0.45 * sr) * t + phase) / (1 + i)
    x *= np.minimum(1.0, t * sr / 8.0)  # a short attack: no step at sample 0
    return x / (np.max(np.abs(x)) + 1e-12)


def _pulses(n, indices, amps, kernel) -> np.ndarray:
    train = np.zeros(n)
    np.add.at(train, np.clip(indices, 0, n - 1), amps)
    return sps.fftconvolve(train, kernel)[:n]


def _speed(sig: dict, n: int, sr: int, streams: Streams, mods: Mods) -> np.ndarray:
    """Per-sample speed factor: the clip's drift about the ID's speed, a wobble, the anomaly's change."""
    rng = streams("speed")
    base = 1.0 + sig["speed_sd"] * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    wobble = 1.0 + sig["wobble"] * dsp.smooth_curve(rng, n, sig["wobble_hz"], sr)
    return base * wobble * mods.speed * (1.0 + mods.drift * np.linspace(0.0, 1.0, n))


def _load(streams: Streams) -> float:
    """The clip's load in [-1, 1]: it tilts and raises the broadband parts a little."""
    return float(streams("load").uniform(-1.0, 1.0))


def _common(rng) -> dict:
    return {"speed_sd": rng.uniform(0.006, 0.02), "wobble": rng.uniform(0.002, 0.008),
            "wobble_hz": rng.uniform(0.2, 1.0), "load_db": rng.uniform(1.0, 3.0),
            "room_rt60_s": rng.uniform(0.15, 0.5), "room_drr_db": rng.uniform(6.0, 16.0),
            "room_seed": int(rng.integers(2 ** 31)), "fault_db": 0.0}


# ---------------------------------------------------------------------------------------------
# Signatures: one per (seed, type, ID)


def signature(machine_type: str, rng: np.random.Generator) -> dict:
    """The parameters that make one machine ID sound like itself."""
    sig = _common(rng)
    if machine_type == "fan":
        rot = rng.uniform(14.0, 26.0)
        sig.update(rot_hz=rot, blades=int(rng.integers(4, 10)), amps=_profile(rng, 8, 0.7, 1.5),
                   missing_harmonic=int(rng.integers(0, 3)), tone_db=rng.uniform(-12.0, -3.0),
                   lo_hz=rng.uniform(40.0, 120.0), hi_hz=rng.uniform(2500.0, 7000.0), tilt=rng.uniform(-5.0, -2.0),
                   modes=_modes(rng, 3, 250.0, 5000.0), am_depth=rng.uniform(0.05, 0.2))
    elif machine_type == "pump":
        rot = rng.uniform(24.0, 48.0)
        sig.update(rot_hz=rot, vanes=int(rng.integers(3, 8)), amps=_profile(rng, 6, 0.8, 1.6),
                   vane_amps=_profile(rng, 4, 0.5, 1.2), tone_db=rng.uniform(-10.0, -2.0),
                   vane_db=rng.uniform(-8.0, 0.0), lo_hz=rng.uniform(200.0, 600.0), hi_hz=rng.uniform(2000.0, 5000.0),
                   tilt=rng.uniform(-4.0, -1.0), modes=_modes(rng, 2, 400.0, 3000.0),
                   pulse_hz=rng.uniform(2.0, 7.0), pulse_depth=rng.uniform(0.3, 0.7),
                   pulse_duty=rng.uniform(0.2, 0.5), thump_hz=rng.uniform(60.0, 160.0),
                   thump_tau=rng.uniform(0.02, 0.06), thump_db=rng.uniform(-4.0, 4.0))
    elif machine_type == "slider":
        f0 = rng.uniform(120.0, 320.0)
        sig.update(rot_hz=f0 / rng.uniform(6.0, 10.0), f0_hz=f0, amps=_profile(rng, 6, 0.6, 1.4),
                   stroke_s=rng.uniform(0.5, 1.2), pause_s=rng.uniform(0.1, 0.4), ramp=rng.uniform(0.15, 0.35),
                   back_ratio=rng.uniform(0.8, 1.0), rail_lo_hz=rng.uniform(800.0, 2000.0),
                   rail_hi_hz=rng.uniform(4000.0, 7500.0), rail_db=rng.uniform(-16.0, -8.0),
                   impact_modes=[(_log_u(rng, 400.0, 3000.0), rng.uniform(0.01, 0.04)) for _ in range(3)],
                   impact_db=rng.uniform(-26.0, -18.0),
                   fault_db=8.0)  # faults sound only while it moves, against its loudest part
    elif machine_type == "valve":
        n_open = int(rng.integers(1, 4))
        slots = np.sort(rng.uniform(0.0, 0.8, n_open))
        sig.update(rot_hz=rng.uniform(8.0, 20.0), cycle_s=rng.uniform(0.6, 1.4), open_at=[float(s) for s in slots],
                   open_s=[rng.uniform(0.05, 0.2) for _ in range(n_open)],
                   open_modes=[(_log_u(rng, 800.0, 6000.0), rng.uniform(0.003, 0.012)) for _ in range(3)],
                   close_modes=[(_log_u(rng, 800.0, 6000.0), rng.uniform(0.003, 0.012)) for _ in range(3)],
                   close_db=rng.uniform(-6.0, 0.0), hiss_lo_hz=rng.uniform(1000.0, 3000.0),
                   hiss_hi_hz=rng.uniform(5000.0, 7800.0), hiss_db=rng.uniform(-18.0, -8.0),
                   hum_hz=rng.uniform(40.0, 100.0), hum_amps=_profile(rng, 4, 1.0, 2.0),
                   hum_db=rng.uniform(-30.0, -20.0))
    elif machine_type == "ToyCar":
        f0 = rng.uniform(180.0, 420.0)
        even = rng.uniform(0.2, 1.0)
        amps = _profile(rng, 10, 0.6, 1.3) * np.where(np.arange(1, 11) % 2 == 0, even, 1.0)
        sig.update(rot_hz=f0 / rng.uniform(8.0, 15.0), f0_hz=f0, amps=amps, mesh_ratio=rng.uniform(1.3, 2.7),
                   mesh_amps=_profile(rng, 3, 0.5, 1.0), mesh_db=rng.uniform(-8.0, -2.0),
                   roll_hi_hz=rng.uniform(1500.0, 4000.0), roll_db=rng.uniform(-8.0, -2.0),
                   roll_depth=rng.uniform(0.1, 0.4), brush_db=rng.uniform(-20.0, -10.0),
                   modes=_modes(rng, 2, 300.0, 3000.0))
        sig.update(wobble=rng.uniform(0.06, 0.15), wobble_hz=rng.uniform(0.2, 0.6))  # the car speeds up, slows down
    elif machine_type == "ToyConveyor":
        f0 = rng.uniform(60.0, 150.0)
        sig.update(rot_hz=f0 / rng.uniform(3.0, 6.0), f0_hz=f0, amps=_profile(rng, 5, 0.8, 1.6),
                   tick_hz=rng.uniform(2.5, 8.0),
                   tick_modes=[(_log_u(rng, 1000.0, 5000.0), rng.uniform(0.002, 0.008)) for _ in range(2)],
                   tick_db=rng.uniform(-10.0, -2.0), roll_hi_hz=rng.uniform(800.0, 2500.0),
                   roll_db=rng.uniform(-6.0, 0.0), hiss_db=rng.uniform(-14.0, -6.0),
                   tilt=rng.uniform(-5.0, -2.0), modes=_modes(rng, 2, 200.0, 2000.0))
    else:
        raise KeyError(machine_type)
    return sig


def blend_signatures(shared: dict, own: dict, spread: float) -> dict:
    """An ID's signature ``spread`` of the way from its type's shared signature to its own: the
    continuous values (frequencies, levels, profiles, modes) are interpolated; counts and other
    structure (blades, vanes, which harmonic can go missing, the valve's openings, the room) are
    the shared ones, so at a small spread the IDs of a type differ only in fine detail, as
    DCASE2020's IDs of one machine type do."""
    def mix(a, b):
        if isinstance(a, (bool, int, np.integer)) or isinstance(b, (bool, int, np.integer)):
            return a
        if isinstance(a, float):
            return float(a + spread * (b - a))
        if isinstance(a, np.ndarray) and a.shape == b.shape:
            return a + spread * (b - a)
        if isinstance(a, (list, tuple)) and len(a) == len(b):
            return type(a)(mix(x, y) for x, y in zip(a, b))
        return a

    return {key: mix(value, own[key]) for key, value in shared.items()}


# ---------------------------------------------------------------------------------------------
# Machines: each returns the dry machine sound, about unit RMS when nothing is missing


def _fan(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    rot_phase = _phase(sig["rot_hz"] * speed, sr, st("phase").random())
    gains = np.ones(len(sig["amps"]))
    gains[sig["missing_harmonic"]] = 1.0 - mods.missing
    whine = _tone(sig["rot_hz"] * sig["blades"] * speed, sig["amps"], sr, st("whine"), gains)
    air = _noise(st("air"), n, sr, sig["lo_hz"], sig["hi_hz"], sig["tilt"], sig["modes"], 0.5 * load)
    air *= 1.0 + sig["am_depth"] * np.sin(2 * np.pi * rot_phase)
    return 10 ** (sig["load_db"] * load / 20) * air + 10 ** (sig["tone_db"] / 20) * whine


def _pump(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    motor = _tone(sig["rot_hz"] * speed, sig["amps"], sr, st("motor"))
    vane = _tone(sig["rot_hz"] * sig["vanes"] * speed, sig["vane_amps"], sr, st("vane"))
    flow = _noise(st("flow"), n, sr, sig["lo_hz"], sig["hi_hz"], sig["tilt"], sig["modes"], 0.5 * load)
    pulse_phase = _phase(sig["pulse_hz"] * speed, sr, st("phase").random())
    pulse = np.clip((np.mod(pulse_phase, 1.0)) / sig["pulse_duty"], 0.0, 1.0)
    pulse = np.sin(np.pi * pulse) ** 2  # a raised-cosine surge once per cycle
    flow *= 1.0 - sig["pulse_depth"] + sig["pulse_depth"] * 2.0 * pulse
    thump = _ring(sr, [(sig["thump_hz"], sig["thump_tau"])], 5 * sig["thump_tau"])
    hits = _event_indices(pulse_phase)
    amps = 10 ** (st("thumps").normal(0.0, 1.0, len(hits)) / 20)
    keep = _keep(len(hits), mods)  # thumps gone
    thumps = _pulses(n, hits[keep], amps[keep], thump)
    thump_level = 10 ** (sig["thump_db"] / 20) / np.sqrt(np.sum(thump ** 2) * sig["pulse_hz"] / sr)  # ~unit RMS
    return (10 ** (sig["load_db"] * load / 20) * flow + 10 ** (sig["tone_db"] / 20) * motor
            + 10 ** (sig["vane_db"] / 20) * vane + thump_level * thumps)


def _slider(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    stroke, pause = sig["stroke_s"], sig["pause_s"]
    cycle = 2.0 * (stroke + pause)  # out, pause, back, pause
    phase = _phase(speed / cycle, sr, st("phase").random())
    u = np.mod(phase, 1.0) * cycle  # nominal seconds into the cycle
    back = u >= stroke + pause
    s = np.where(back, u - stroke - pause, u)  # seconds into the current stroke (or pause)
    velocity = np.clip(np.minimum(s, stroke - s) / (sig["ramp"] * stroke), 0.0, 1.0) * (s < stroke)
    velocity = np.where(back, sig["back_ratio"] * velocity, velocity)
    motor = velocity * _tone(sig["f0_hz"] * speed * (0.6 + 0.4 * velocity), sig["amps"], sr, st("motor"))
    rail = velocity * _noise(st("rail"), n, sr, sig["rail_lo_hz"], sig["rail_hi_hz"], -2.0, (), 0.5 * load)
    ends = np.sort(np.concatenate([_event_indices(phase - stroke / cycle),
                                   _event_indices(phase - (2 * stroke + pause) / cycle)]))
    amps = 10 ** (st("impacts").normal(0.0, 1.5, len(ends)) / 20)
    keep = _keep(len(ends), mods)  # end-stop impacts gone
    impact = _ring(sr, sig["impact_modes"], 0.2, st("impact_kernel"))
    impacts = _pulses(n, ends[keep], amps[keep], impact)
    level = 10 ** (sig["impact_db"] / 20) / np.sqrt(np.sum(impact ** 2) * 2.0 / cycle / sr)  # RMS re the motor
    moving = np.convolve((velocity > 0).astype(float), np.hanning(801) / np.hanning(801).sum(), mode="same")
    return motor + 10 ** ((sig["rail_db"] + sig["load_db"] * load) / 20) * rail + level * impacts, moving


def _valve(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    cycle_phase = _phase(speed / sig["cycle_s"], sr, st("phase").random())
    starts, stops = [], []
    for at, dur in zip(sig["open_at"], sig["open_s"]):
        start = _event_indices(cycle_phase - at)
        starts.append(start)
        stops.append(start + int(dur * sr / speed.mean()))
    starts, stops = np.concatenate(starts), np.concatenate(stops)
    order = np.argsort(starts)
    starts, stops = starts[order], stops[order]
    jitter = st("clicks")
    open_amps = 10 ** (jitter.normal(0.0, 1.0, len(starts)) / 20)
    close_amps = 10 ** (sig["close_db"] / 20) * 10 ** (jitter.normal(0.0, 1.0, len(starts)) / 20)
    closes = _keep(len(starts), mods)
    # A valve that sticks open: no closing click, the flow runs on until the next opening.
    stops = np.where(closes, stops, np.append(starts[1:], n))
    opens = np.zeros(n)
    for a, b in zip(starts, stops):
        opens[a:min(b, n)] = 1.0
    opens = np.convolve(opens, np.hanning(81) / np.hanning(81).sum(), mode="same")
    click_open = _ring(sr, sig["open_modes"], 0.08, st("open_kernel"))
    click_close = _ring(sr, sig["close_modes"], 0.08, st("close_kernel"))
    shut = closes & (stops < n)
    clicks = _pulses(n, starts, open_amps, click_open) + _pulses(n, stops[shut], close_amps[shut], click_close)
    per_second = len(sig["open_at"]) / sig["cycle_s"]
    clicks *= 1.0 / np.sqrt(np.sum(click_open ** 2) * per_second / sr)  # about unit RMS
    hiss = opens * _noise(st("hiss"), n, sr, sig["hiss_lo_hz"], sig["hiss_hi_hz"], -1.0, (), 0.5 * load)
    hum = _tone(sig["hum_hz"] * speed, sig["hum_amps"], sr, st("hum"))
    return (clicks + 10 ** ((sig["hiss_db"] + sig["load_db"] * load) / 20) * hiss
            + 10 ** (sig["hum_db"] / 20) * hum)


def _toycar(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    f0 = sig["f0_hz"] * speed
    motor = _tone(f0, sig["amps"], sr, st("motor"))
    mesh = (1.0 - mods.missing) * _tone(f0 * sig["mesh_ratio"], sig["mesh_amps"], sr, st("mesh"))
    wheel = _phase(sig["rot_hz"] * speed, sr, st("phase").random())
    roll = _noise(st("roll"), n, sr, 80.0, sig["roll_hi_hz"], -3.0, sig["modes"], 0.5 * load)
    roll *= (1.0 + sig["roll_depth"] * np.sin(2 * np.pi * wheel)) * speed ** 2
    brush = _noise(st("brush"), n, sr, 2000.0, 7500.0, 0.0) * speed
    return (motor + 10 ** (sig["mesh_db"] / 20) * mesh + 10 ** ((sig["roll_db"] + sig["load_db"] * load) / 20) * roll
            + 10 ** (sig["brush_db"] / 20) * brush)


def _toyconveyor(sig, n, sr, st, mods):
    speed = _speed(sig, n, sr, st, mods)
    load = _load(st)
    motor = _tone(sig["f0_hz"] * speed, sig["amps"], sr, st("motor"))
    roll = _noise(st("roll"), n, sr, 40.0, sig["roll_hi_hz"], sig["tilt"], sig["modes"], 0.5 * load)
    ticks_at = _event_indices(_phase(sig["tick_hz"] * speed, sr, st("phase").random()))
    amps = 10 ** (st("ticks").normal(0.0, 1.5, len(ticks_at)) / 20)
    keep = _keep(len(ticks_at), mods)  # ticks gone
    tick = _ring(sr, sig["tick_modes"], 0.05, st("tick_kernel"))
    ticks = _pulses(n, ticks_at[keep], amps[keep], tick)
    level = 10 ** (sig["tick_db"] / 20) / np.sqrt(np.sum(tick ** 2) * sig["tick_hz"] / sr)  # RMS re the motor
    hiss = _noise(st("hiss"), n, sr, 2000.0, 7500.0, -1.0)  # the belt sliding over its bed
    return (motor + 10 ** ((sig["roll_db"] + sig["load_db"] * load) / 20) * roll + level * ticks
            + 10 ** (sig["hiss_db"] / 20) * hiss)


# Each returns the sound, or (sound, activity): where the machine runs (0..1), None for always.
RENDERERS = {"fan": _fan, "pump": _pump, "slider": _slider, "valve": _valve, "ToyCar": _toycar,
             "ToyConveyor": _toyconveyor}


def render_machine(machine_type: str, sig: dict, n: int, sr: int, streams: Streams,
                   mods: Mods = Mods()) -> tuple[np.ndarray, np.ndarray | None]:
    """(the dry sound of one machine for one clip, where it runs: 0..1 per sample or None for
    all the time); a pure function of its arguments. A slider's bearings click only while it moves."""
    out = RENDERERS[machine_type](sig, n, sr, streams, mods)
    return out if isinstance(out, tuple) else (out, None)


def room(sig: dict, x: np.ndarray, sr: int) -> np.ndarray:
    """The ID's fixed place in the factory: its own reverb tail and direct-to-reverberant ratio."""
    tail = dsp.reverb_tail(np.random.default_rng(sig["room_seed"]), sr, sig["room_rt60_s"])
    return dsp.reverberate(x, tail, sig["room_drr_db"], len(x))


# ---------------------------------------------------------------------------------------------
# Anomalies


def draw_anomaly(kind: str, severity: float, sig: dict, rng: np.random.Generator) -> Anomaly:
    """The parameters of one anomaly; `severity` in [0, 1] grades it from mild to clear."""
    s = float(severity)
    louder = sig["fault_db"]  # the levels below are re the machine's RMS; see the slider
    if kind == "clicks":
        params = {"level_db": louder - 26.0 + 24.0 * s, "rate_hz": sig["rot_hz"] * rng.uniform(2.5, 5.5),
                  "resonance_hz": _log_u(rng, 2000.0, 7000.0), "tau_s": rng.uniform(0.0005, 0.002),
                  "presence": rng.uniform(0.4, 1.0)}
    elif kind == "speed":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if rng.random() < 0.5:
            params = {"speed": 1.0 + sign * (0.02 + 0.10 * s), "drift": 0.0}
        else:
            params = {"speed": 1.0, "drift": sign * (0.03 + 0.15 * s)}
    elif kind == "rattle":
        params = {"level_db": louder - 20.0 + 22.0 * s, "rate_hz": rng.uniform(8.0, 30.0),
                  "lo_hz": rng.uniform(300.0, 1500.0), "hi_hz": rng.uniform(3000.0, 7500.0),
                  "coverage": rng.uniform(0.3, 0.8)}
    elif kind == "imbalance":
        params = {"depth": 0.2 + 0.7 * s, "rumble_db": louder - 20.0 + 20.0 * s}
    elif kind == "missing":
        params = {"missing": 0.4 + 0.6 * s, "missing_seed": int(rng.integers(2 ** 31))}
    elif kind == "friction":
        params = {"level_db": louder - 26.0 + 24.0 * s, "centre_hz": _log_u(rng, 1500.0, 6000.0),
                  "width_octaves": rng.uniform(0.3, 0.7), "envelope_hz": rng.uniform(0.5, 2.0),
                  "squeal": bool(rng.random() < 0.5)}
    else:
        raise KeyError(kind)
    return Anomaly(kind, round(s, 4), {k: (round(v, 6) if isinstance(v, float) else v) for k, v in params.items()})


def mods_for(anomaly: Anomaly | None) -> Mods:
    """The rendering changes of a modifying anomaly (speed, missing); none for the others."""
    if anomaly is None:
        return Mods()
    p = anomaly.params
    if anomaly.kind == "speed":
        return Mods(speed=p["speed"], drift=p["drift"])
    if anomaly.kind == "missing":
        return Mods(missing=p["missing"], missing_seed=p["missing_seed"])
    return Mods()


def apply_anomaly(anomaly: Anomaly, machine: np.ndarray, ref_rms: float, sig: dict, sr: int,
                  rng: np.random.Generator, activity: np.ndarray | None = None) -> np.ndarray:
    """Add (or impose) an additive anomaly on the machine sound; levels are re `ref_rms`,
    the RMS of the clip's normal machine sound; the fault sounds only where `activity` > 0."""
    n = len(machine)
    p = anomaly.params
    t = np.arange(n) / sr
    if anomaly.kind == "clicks":
        at = _event_indices(_phase(np.full(n, p["rate_hz"]), sr, rng.random()))
        present = rng.random(len(at)) < p["presence"]
        at = at[present] if present.any() else at[:1]
        at = np.clip(at + rng.integers(-int(0.002 * sr), int(0.002 * sr) + 1, len(at)), 0, n - 1)
        kernel = _ring(sr, [(p["resonance_hz"], p["tau_s"]), (p["resonance_hz"] * 1.6, p["tau_s"] / 2)],
                       8 * p["tau_s"], rng)
        extra = _pulses(n, at, 10 ** (rng.normal(0.0, 2.0, len(at)) / 20), kernel)
    elif anomaly.kind == "rattle":
        curve = dsp.smooth_curve(rng, n, 1.0, sr)
        gate = curve >= np.quantile(curve, 1.0 - p["coverage"])  # bursts over a share `coverage` of the clip
        gate = np.convolve(gate.astype(float), np.hanning(401) / np.hanning(401).sum(), mode="same")
        knock = 0.5 + 0.5 * np.sin(2 * np.pi * p["rate_hz"] * t + rng.uniform(0, 2 * np.pi))
        flutter = knock ** 4  # one knock per cycle
        extra = dsp.shaped_noise(rng, n, sr, p["lo_hz"], p["hi_hz"]) * flutter * gate
    elif anomaly.kind == "friction":
        c, w = p["centre_hz"], p["width_octaves"]
        extra = dsp.shaped_noise(rng, n, sr, c * 2 ** -w, c * 2 ** w)
        if p["squeal"]:
            f = c * (1.0 + 0.01 * dsp.smooth_curve(rng, n, 3.0, sr))
            extra = extra / dsp.rms(extra) + np.sin(2 * np.pi * np.cumsum(f) / sr)
        extra = extra * (1.0 + 0.8 * dsp.smooth_curve(rng, n, p["envelope_hz"], sr))
    elif anomaly.kind == "imbalance":
        shaft = _phase(np.full(n, sig["rot_hz"]), sr, rng.random())
        rumble = np.sin(2 * np.pi * shaft) + 0.3 * np.sin(4 * np.pi * shaft)
        if activity is not None:
            rumble = rumble * activity
        return (machine * (1.0 + p["depth"] * np.sin(2 * np.pi * shaft))
                + ref_rms * 10 ** (p["rumble_db"] / 20) * rumble / dsp.rms(rumble))
    else:
        return machine  # speed and missing act through Mods
    if activity is not None:
        extra = extra * activity
    active = np.abs(extra) > 0
    level = dsp.rms(extra[active]) if active.any() else 1.0
    return machine + ref_rms * 10 ** (p["level_db"] / 20) * extra / level


# ---------------------------------------------------------------------------------------------
# Background


def factory_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A unit-RMS factory bed: a shaped-noise floor, distant machines in a large hall, impacts."""
    floor = _noise(rng, n, sr, 20.0, sr / 2, rng.uniform(-7.0, -3.0), _modes(rng, int(rng.integers(1, 4)),
                                                                             100.0, 4000.0))
    far = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):  # other machines, far away: low, reverberant
        f0 = _log_u(rng, 30.0, 400.0) * (1.0 + 0.01 * dsp.smooth_curve(rng, n, rng.uniform(0.1, 0.5), sr))
        hum = dsp.band_filter(_tone(f0, _profile(rng, 6, 0.8, 2.0), sr, rng), sr, 0.0, rng.uniform(800.0, 3000.0))
        far += 10 ** (rng.uniform(-12.0, -3.0) / 20) * hum / dsp.rms(hum)
    n_hits = int(rng.poisson(rng.uniform(0.1, 0.8) * n / sr))
    if n_hits:
        at = rng.integers(0, n, n_hits)
        kernel = dsp.band_filter(rng.standard_normal(int(0.3 * sr)) * np.exp(-np.arange(int(0.3 * sr))
                                 / (rng.uniform(0.005, 0.04) * sr)), sr, rng.uniform(100.0, 800.0),
                                 rng.uniform(2000.0, 7000.0))
        hits = _pulses(n, at, 10 ** (rng.uniform(-6.0, 12.0, n_hits) / 20), kernel / (dsp.rms(kernel[:800]) + 1e-12))
        far += hits / np.sqrt(n / 800)  # about the floor's level over a hit's first 50 ms
    tail = dsp.reverb_tail(rng, sr, rng.uniform(0.6, 1.5))
    x = floor + dsp.reverberate(far, tail, rng.uniform(-6.0, 3.0), n)
    x *= 1.0 + 0.2 * dsp.smooth_curve(rng, n, rng.uniform(0.1, 0.5), sr)
    return x / dsp.rms(x)
