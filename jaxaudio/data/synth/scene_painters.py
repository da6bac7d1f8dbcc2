"""Procedural aerial-scene painters: one function per class, numpy only.

A painter gets a :class:`Field` (the world coordinates of every rendered pixel, already
zoomed, rotated and shifted by the view, and the image's random generator) and returns an
(H, W, 3) float RGB image in about [0, 1] plus a dict of the facts it drew (orientation,
density, ...). Everything is an analytic function of the coordinates: lattice value noise for
texture, hashed cells for repeated objects (roofs, cars, crowns, circles), signed distances with
a one-pixel ramp for edges, so a scene looks the same at 32 or 256 pixels, only sharper.

World units: the image spans about 1 unit (times the view's zoom). The smallest objects a
class is recognised by (a car, a roof, a crown) are about 0.04-0.1 units, i.e. 3-6 pixels at
64x64: a small CNN can see them at the tiny preset's size.

Colours are drawn per image from wide, overlapping ranges (grass from lush to dry, water from
deep blue to muddy green, roofs from red tile to grey), so classes share colours and are told
apart by their structure: mean colour alone does not name the class.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

TAU = 2.0 * math.pi


class Field:
    """World coordinates x, y (H, W) of one image's rendered pixels, its pixel size in world
    units (`px`, for one-pixel edge ramps and to fade stripes finer than a pixel), and `rng`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, px: float, rng: np.random.Generator):
        self.x, self.y, self.px, self.rng = x, y, float(px), rng
        # One lattice of 256 x 256 values and one of hashes per image: a noise corner or a cell
        # is one table look-up (the lattice repeats every 256 cells, far beyond an image).
        self._values = rng.random(65536)
        self._hashes = rng.integers(0, 256, 65536)

    # -- coordinates -------------------------------------------------------------------------
    def rotated(self, angle: float, cx: float = 0.0, cy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(u, v): coordinates along and across direction `angle` (radians), origin at (cx, cy)."""
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        return c * dx + s * dy, -s * dx + c * dy

    # -- hashing and noise -------------------------------------------------------------------
    def hash2(self, i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
        """An integer in [0, 256) per lattice cell (i, j); another `salt` reads other rows."""
        return self._hashes[(((i + 97 * salt) & 255) << 8) | (j & 255)]

    def noise_fn(self, freq: float, octaves: int = 1, gain: float = 0.5) -> Callable[[np.ndarray, np.ndarray],
                                                                                   np.ndarray]:
        """A fractal value-noise field (u, v) -> [0, 1] (mean about 0.5) at `freq` cycles per
        world unit, fixed once drawn: evaluate it at the pixels or at any other points."""
        # The offsets also keep the lattice coordinates positive, so truncation is floor.
        offsets = self.rng.uniform(0, 256, (octaves, 2)) + 4096.0

        def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            total, weight, amp = 0.0, 0.0, 1.0
            for k, (ox, oy) in enumerate(offsets):
                f = freq * 2.0 ** k
                total = total + amp * self._value_noise(u * f + ox, v * f + oy)
                weight += amp
                amp *= gain
            return total / weight

        return field

    def noise(self, freq: float, octaves: int = 1, gain: float = 0.5, u=None, v=None) -> np.ndarray:
        """A fresh noise field (noise_fn) at the pixels, or at (u, v); two calls are independent."""
        return self.noise_fn(freq, octaves, gain)(self.x if u is None else u, self.y if v is None else v)

    def noise1d(self, freq: float, t: np.ndarray, octaves: int = 2) -> np.ndarray:
        """Value noise along one coordinate (a wobbling line), in [0, 1]."""
        return self.noise(freq, octaves, u=t, v=np.zeros_like(t))

    def _value_noise(self, xf: np.ndarray, yf: np.ndarray) -> np.ndarray:
        xi, yi = xf.astype(np.int32), yf.astype(np.int32)
        fx, fy = xf - xi, yf - yi
        xi, yi = xi & 255, yi & 255
        sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        row0, row1 = xi << 8, ((xi + 1) & 255) << 8
        y1 = (yi + 1) & 255
        val = self._values
        v00, v10, v01, v11 = val[row0 | yi], val[row1 | yi], val[row0 | y1], val[row1 | y1]
        top = v00 + (v10 - v00) * sx
        bottom = v01 + (v11 - v01) * sx
        return top + (bottom - top) * sy

    def cell_tables(self, n: int) -> np.ndarray:
        """(n, 256) uniform attributes; index with a cell's hash2 for n independent per-cell draws."""
        return self.rng.random((n, 256))


# -- drawing helpers ------------------------------------------------------------------------------
def cover(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage of the region d < 0 (d a signed distance in world units), ramped over one pixel."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def box_sdf(lu: np.ndarray, lv: np.ndarray, hu, hv) -> np.ndarray:
    """Signed distance to an axis-aligned box of half-sizes (hu, hv) centred at the origin."""
    qu, qv = np.abs(lu) - hu, np.abs(lv) - hv
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def stripes(s: np.ndarray, period: float, px: float, duty: float = 0.5) -> np.ndarray:
    """Anti-aliased square stripes in [0, 1] along coordinate s (1 on the first `duty` of each
    period); stripes finer than about three pixels fade to their mean instead of aliasing."""
    phase = s / period - np.floor(s / period)
    d = np.minimum(np.abs(phase - duty / 2), 1.0 - np.abs(phase - duty / 2)) * period - duty * period / 2
    sharp = cover(d, px)
    fade = float(np.clip((period / px - 2.0) / 2.0, 0.0, 1.0))
    return fade * sharp + (1.0 - fade) * duty


def waves(s: np.ndarray, period: float, px: float) -> np.ndarray:
    """A sinusoid in [-1, 1] along s, faded out where its period nears two pixels."""
    fade = float(np.clip((period / px - 2.0) / 2.0, 0.0, 1.0))
    return fade * np.sin(TAU * s / period)


def paint(img: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    """img blended towards colour ((3,) or (H, W, 3)) by mask (H, W) in [0, 1], in place."""
    img += (np.asarray(colour) - img) * mask[..., None]
    return img


def shade(img: np.ndarray, factor: np.ndarray) -> np.ndarray:
    img *= factor[..., None]
    return img


def jitter(rng: np.random.Generator, base, spread: float = 0.08, bright: float = 0.12) -> np.ndarray:
    """base colour with per-channel (spread) and overall (bright) log-normal gains."""
    return np.clip(np.asarray(base, float) * np.exp(rng.normal(0, spread, 3) + rng.normal(0, bright)), 0, 1)


def pick(rng: np.random.Generator, colours) -> np.ndarray:
    return np.asarray(colours[int(rng.integers(len(colours)))], float)


def mix(a, b, t) -> np.ndarray:
    return np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * t


# -- palettes (RGB in [0, 1]) ---------------------------------------------------------------------
GRASS_LUSH = (0.24, 0.40, 0.17)
GRASS_DRY = (0.60, 0.55, 0.34)
FOREST = (0.12, 0.24, 0.11)
FOREST_AUTUMN = (0.38, 0.30, 0.12)
SOIL = (0.47, 0.37, 0.27)
SOIL_DARK = (0.30, 0.24, 0.19)
SAND = (0.82, 0.74, 0.56)
SAND_RED = (0.78, 0.52, 0.33)
SAND_GREY = (0.62, 0.58, 0.50)
WATER_DEEP = (0.06, 0.13, 0.24)
WATER_TEAL = (0.10, 0.27, 0.28)
WATER_MUD = (0.30, 0.31, 0.22)
ASPHALT = (0.30, 0.30, 0.31)
CONCRETE = (0.66, 0.65, 0.62)
ROOFS = ((0.62, 0.30, 0.24), (0.50, 0.50, 0.50), (0.26, 0.26, 0.29), (0.55, 0.42, 0.32), (0.80, 0.79, 0.76),
         (0.35, 0.42, 0.52), (0.70, 0.55, 0.40))
CARS = ((0.90, 0.90, 0.90), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.65, 0.12, 0.10), (0.12, 0.22, 0.50),
        (0.45, 0.45, 0.47), (0.85, 0.80, 0.65))
CROPS = (GRASS_LUSH, (0.35, 0.50, 0.20), (0.62, 0.58, 0.30), (0.76, 0.68, 0.40), SOIL, SOIL_DARK, (0.50, 0.55, 0.35),
         (0.20, 0.33, 0.15))


def grass_colour(rng) -> np.ndarray:
    return jitter(rng, mix(GRASS_LUSH, GRASS_DRY, rng.uniform(0.0, 0.85) ** 1.5))


def water_colour(rng) -> np.ndarray:
    w = rng.dirichlet((1.5, 1.0, 0.6))
    return jitter(rng, w[0] * np.array(WATER_DEEP) + w[1] * np.array(WATER_TEAL) + w[2] * np.array(WATER_MUD),
                  spread=0.12, bright=0.2)


def vegetation(f: Field, base, patch=None, grain: float = 0.12) -> np.ndarray:
    """Grass-like ground: base colour, soft patches of a second colour, fine grain."""
    rng = f.rng
    patch = jitter(rng, mix(base, GRASS_DRY if rng.random() < 0.5 else SOIL, rng.uniform(0.2, 0.6))) \
        if patch is None else patch
    img = np.empty(f.x.shape + (3,))
    img[...] = base
    t = np.clip((f.noise(rng.uniform(2, 5), 3) - 0.5) * rng.uniform(2, 4) + 0.5, 0, 1)
    paint(img, t * rng.uniform(0.3, 0.9), patch)
    shade(img, 1 + grain * (f.noise(rng.uniform(25, 45), 2) - 0.5) * 2)
    return img


def crowns(f: Field, spacing: float, presence: float, radius=(0.45, 0.75), base=FOREST, spread: float = 0.15,
           sun: float | None = None, u=None, v=None, keep: Callable | None = None):
    """Tree crowns on jittered cells (a Worley pattern over 3x3 neighbours): returns
    (coverage (H, W), shaded crown colour (H, W, 3)). ``keep(cu, cv) -> bool array``, given the
    crowns' centres, removes whole crowns (groves, a river bank) instead of cutting them."""
    rng = f.rng
    u = f.x if u is None else u
    v = f.y if v is None else v
    t = f.cell_tables(5)
    shift = rng.uniform(0, 100, 2)
    gu, gv = u / spacing + shift[0], v / spacing + shift[1]
    i0, j0 = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
    best = np.zeros(u.shape)
    tone = np.zeros(u.shape)
    centre_u = np.zeros(u.shape)
    centre_v = np.zeros(u.shape)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            h = f.hash2(i0 + di, j0 + dj, 17)
            r = radius[0] + (radius[1] - radius[0]) * t[2, h]
            cu, cv = i0 + di + 0.15 + 0.7 * t[0, h], j0 + dj + 0.15 + 0.7 * t[1, h]
            du, dv = (gu - cu) / r, (gv - cv) / r
            c = (1.0 - (du * du + dv * dv)) * (t[3, h] < presence)
            win = c > best
            best = np.where(win, c, best)
            tone = np.where(win, t[4, h], tone)
            if keep is not None:
                centre_u = np.where(win, cu, centre_u)
                centre_v = np.where(win, cv, centre_v)
    if keep is not None:
        best = best * keep((centre_u - shift[0]) * spacing, (centre_v - shift[1]) * spacing)
    coverage = np.clip(best * spacing * 0.3 / f.px, 0, 1)  # about a one-pixel soft rim
    sun = rng.uniform(0, TAU) if sun is None else sun
    # Lit on the sun's side: the slope of the crown's height (best) towards the sun, per pixel.
    gy, gx = np.gradient(best)
    slope = (gx * math.cos(sun) + gy * math.sin(sun)) / (f.px / spacing)
    light = 0.85 + 0.2 * np.clip(slope, -1.5, 1.5)
    colour = np.asarray(base, float) * (1 + spread * (tone - 0.5) * 2)[..., None] * light[..., None]
    return coverage, colour


def meander(f: Field, u: np.ndarray, amp: float, wavelength: float, wobble: float, phase: float,
            noise: Callable | None = None):
    """Centre offset c(u) of a meandering line and the cosine of its slope (for perpendicular
    width); `noise` (a Field.noise_fn) fixes the wobble, to evaluate the same line elsewhere."""
    k = TAU / wavelength
    noise = f.noise_fn(1.5, 2) if noise is None else noise
    c = amp * np.sin(k * u + phase) + wobble * (noise(u, np.zeros_like(u)) - 0.5)
    slope = amp * k * np.cos(k * u + phase)
    return c, 1.0 / np.sqrt(1.0 + slope * slope)


# -- classes --------------------------------------------------------------------------------------
def rectangular_farmland(f: Field) -> tuple[np.ndarray, dict]:
    """Parcels in a (brick-offset) grid, each one crop colour with sowing or tramline stripes
    along or across it, separated by thin margins."""
    rng = f.rng
    angle = rng.uniform(0, math.pi)
    u, v = f.rotated(angle)
    a, b = rng.uniform(0.18, 0.45), rng.uniform(0.12, 0.32)
    n_crops = int(rng.integers(2, 6))
    palette = np.stack([jitter(rng, pick(rng, CROPS), 0.1, 0.15) for _ in range(n_crops)])
    t = f.cell_tables(4)
    su = u / a + rng.uniform(0, 50)
    i = np.floor(su).astype(np.int64)
    sv = v / b + t[3, f.hash2(i, i, 5)] + rng.uniform(0, 50)  # each column of parcels offset
    j = np.floor(sv).astype(np.int64)
    h = f.hash2(i, j)
    img = palette[(t[0, h] * n_crops).astype(int)].copy()
    period = rng.uniform(0.02, 0.06)
    contrast = rng.uniform(0.05, 0.3)
    along = t[1, h] < 0.5
    wave = np.where(along, waves(u, period, f.px), waves(v, period * 1.3, f.px))
    shade(img, 1 + contrast * (t[2, h] + 0.3) * wave)
    shade(img, 1 + 0.1 * (f.noise(rng.uniform(6, 14), 3) - 0.5))
    fu, fv = su - i, sv - j
    edge = np.minimum(np.minimum(fu, 1 - fu) * a, np.minimum(fv, 1 - fv) * b)
    width = rng.uniform(0.003, 0.01)
    paint(img, cover(edge - width, f.px), jitter(rng, mix(SOIL, GRASS_LUSH, rng.random())))
    return img, {"angle_deg": math.degrees(angle), "parcel_u": a, "parcel_v": b, "crops": n_crops,
                 "stripe_period": period}


def circular_farmland(f: Field) -> tuple[np.ndarray, dict]:
    """Centre-pivot irrigation circles on a grid; a circle may be half harvested (a sector of
    another crop); faint concentric wheel tracks and the pivot arm; dry ground between."""
    rng = f.rng
    angle = rng.uniform(0, math.pi / 2)
    u, v = f.rotated(angle)
    cell = rng.uniform(0.3, 0.6)
    img = vegetation(f, jitter(rng, mix(SOIL, GRASS_DRY, rng.random())))
    t = f.cell_tables(6)
    gu, gv = u / cell + rng.uniform(0, 50), v / cell + rng.uniform(0, 50)
    i, j = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
    h = f.hash2(i, j, 3)
    lu, lv = (gu - i - 0.5) * cell, (gv - j - 0.5) * cell
    r = np.hypot(lu, lv)
    radius = cell * (0.43 + 0.06 * t[0, h])
    empty = rng.uniform(0.0, 0.25)
    inside = cover(r - radius, f.px) * (t[1, h] >= empty)
    palette = np.stack([jitter(rng, pick(rng, CROPS), 0.1, 0.15) for _ in range(4)])
    crop = palette[(t[2, h] * 4).astype(int)]
    theta = np.arctan2(lv, lu)
    start, span = t[3, h] * TAU, 0.5 + 2.5 * t[4, h]
    sector = ((theta - start) % TAU < span) & (t[5, h] < 0.5)
    crop = np.where(sector[..., None], palette[((t[2, h] * 4).astype(int) + 1) % 4], crop)
    rings = 1 + 0.08 * waves(r, cell * rng.uniform(0.04, 0.08), f.px)
    arm = cover(np.abs(np.sin(theta - start)) * r - 0.003, f.px) * (np.cos(theta - start) > 0)
    crop = crop * (rings * (1 - 0.25 * arm))[..., None]
    paint(img, inside, crop)
    return img, {"angle_deg": math.degrees(angle), "circle_cell": cell, "empty_fraction": empty}


def forest(f: Field) -> tuple[np.ndarray, dict]:
    """A closed canopy of shaded crowns over dark ground; stands of another tone; sometimes a
    firebreak or track."""
    rng = f.rng
    spacing = rng.uniform(0.035, 0.08)
    density = rng.uniform(0.8, 1.0)
    base = jitter(rng, mix(FOREST, FOREST_AUTUMN if rng.random() < 0.3 else GRASS_LUSH, rng.uniform(0, 0.5)))
    cov, colour = crowns(f, spacing, density, base=base, spread=rng.uniform(0.1, 0.3))
    stands = f.noise(rng.uniform(2, 4), 2)
    colour = colour * (1 + 0.25 * (stands - 0.5))[..., None]
    ground = np.asarray(base) * rng.uniform(0.35, 0.6)
    img = np.empty(f.x.shape + (3,))
    img[...] = ground
    paint(img, cov, colour)
    track = rng.random() < 0.25
    if track:
        u, v = f.rotated(rng.uniform(0, math.pi))
        c, cs = meander(f, u, rng.uniform(0, 0.1), rng.uniform(0.8, 2), 0.1, rng.uniform(0, TAU))
        paint(img, cover(np.abs(v - c) * cs - rng.uniform(0.006, 0.015), f.px), jitter(rng, SOIL))
    return img, {"crown_spacing": spacing, "density": density, "track": int(track)}


def meadow(f: Field) -> tuple[np.ndarray, dict]:
    """Grass with soft patches and fine grain, sometimes mowing stripes (as faint as a crop's),
    a few bushes, a path."""
    rng = f.rng
    img = vegetation(f, grass_colour(rng), grain=rng.uniform(0.08, 0.2))
    mown = rng.random() < 0.35
    if mown:
        u, _ = f.rotated(rng.uniform(0, math.pi))
        shade(img, 1 + rng.uniform(0.03, 0.1) * waves(u, rng.uniform(0.04, 0.1), f.px))
    bushes = rng.uniform(0.0, 0.15)
    cov, colour = crowns(f, rng.uniform(0.06, 0.12), bushes, radius=(0.25, 0.45),
                         base=jitter(rng, FOREST), spread=0.2)
    paint(img, cov, colour)
    path = rng.random() < 0.3
    if path:
        u, v = f.rotated(rng.uniform(0, math.pi), *rng.uniform(-0.3, 0.3, 2))
        c, cs = meander(f, u, rng.uniform(0.02, 0.2), rng.uniform(0.5, 1.5), 0.15, rng.uniform(0, TAU))
        paint(img, 0.7 * cover(np.abs(v - c) * cs - rng.uniform(0.003, 0.008), f.px), jitter(rng, SOIL))
    return img, {"mown": int(mown), "bushes": bushes, "path": int(path)}


def desert(f: Field) -> tuple[np.ndarray, dict]:
    """Bare sand or rock: asymmetric dune ridges (a lit stoss side, a shaded slip face), warped,
    or flat ground with rock patches; sparse dark shrubs."""
    rng = f.rng
    w = rng.dirichlet((1.0, 0.7, 0.7))
    base = jitter(rng, w[0] * np.array(SAND) + w[1] * np.array(SAND_RED) + w[2] * np.array(SAND_GREY), 0.06, 0.12)
    img = np.empty(f.x.shape + (3,))
    img[...] = base
    dunes = rng.random() < 0.7
    period = rng.uniform(0.08, 0.2)
    if dunes:
        u, v = f.rotated(rng.uniform(0, math.pi))
        s = u + rng.uniform(0.05, 0.2) * (f.noise(rng.uniform(1.5, 4), 2, u=u, v=v) - 0.5) * 2
        phase = s / period - np.floor(s / period)
        k = rng.uniform(0.6, 0.85)  # share of a period that is the gentle stoss side
        strength = rng.uniform(0.12, 0.3)
        shade(img, np.where(phase < k, 1 + strength * 0.5 * phase / k, 1 - strength * (1 - (phase - k) / (1 - k))))
    else:
        rocks = np.clip((f.noise(rng.uniform(3, 8), 3) - 0.55) * 5, 0, 1)
        paint(img, rocks * rng.uniform(0.3, 0.8), jitter(rng, SOIL_DARK))
    shade(img, 1 + 0.08 * (f.noise(rng.uniform(30, 60), 2) - 0.5) * 2)
    shrubs = rng.uniform(0.0, 0.12)
    cov, colour = crowns(f, rng.uniform(0.05, 0.1), shrubs, radius=(0.12, 0.25), base=jitter(rng, (0.3, 0.3, 0.2)))
    paint(img, cov, colour)
    return img, {"dunes": int(dunes), "dune_period": period, "shrubs": shrubs}


def _water(f: Field, colour, ripple: float) -> np.ndarray:
    rng = f.rng
    img = np.empty(f.x.shape + (3,))
    img[...] = colour
    u, _ = f.rotated(rng.uniform(0, math.pi))
    wind = f.noise(rng.uniform(2, 5), 2)
    shade(img, 1 + ripple * wind * waves(u + 0.01 * f.noise(10, 1), rng.uniform(0.02, 0.05), f.px))
    shade(img, 1 + 0.12 * (f.noise(rng.uniform(3, 6), 2) - 0.5))
    return img


def _land(f: Field) -> np.ndarray:
    """Ground around water: grass, or grass with a ragged edge of trees."""
    rng = f.rng
    img = vegetation(f, grass_colour(rng))
    groves = f.noise_fn(rng.uniform(2, 4), 2)
    cov, colour = crowns(f, rng.uniform(0.04, 0.08), rng.uniform(0.0, 0.7), base=jitter(rng, FOREST),
                         keep=lambda cu, cv: groves(cu, cv) > 0.5)
    paint(img, cov, colour)
    return img


def lake(f: Field) -> tuple[np.ndarray, dict]:
    """A closed water body with a noise-warped shoreline, darker towards its middle, a sand or
    mud rim sometimes, ripples; grass and trees around."""
    rng = f.rng
    img = _land(f)
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    rx, ry = rng.uniform(0.22, 0.5), rng.uniform(0.18, 0.4)
    u, v = f.rotated(rng.uniform(0, math.pi), cx, cy)
    warp = rng.uniform(0.2, 0.6)
    d = (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1 + warp * (f.noise(rng.uniform(2, 4), 3) - 0.5)) * min(rx, ry)
    colour = water_colour(rng)
    water = _water(f, colour, rng.uniform(0.02, 0.08))
    depth = np.clip(-d / (0.5 * min(rx, ry)), 0, 1)
    water *= (1 - rng.uniform(0.1, 0.4) * depth)[..., None]
    rim = rng.random() < 0.6
    if rim:
        paint(img, cover(d - rng.uniform(0.006, 0.02), f.px), jitter(rng, mix(SAND, SOIL, rng.random())))
    paint(img, cover(d, f.px), water)
    return img, {"radius_u": rx, "radius_v": ry, "warp": warp, "rim": int(rim)}


def river(f: Field) -> tuple[np.ndarray, dict]:
    """A meandering band of water across the image, of varying width, with sand bars on some
    bends and trees along the banks; grass or fields beyond."""
    rng = f.rng
    img = _land(f) if rng.random() < 0.6 else rectangular_farmland(f)[0]
    angle, offset = rng.uniform(0, math.pi), rng.uniform(-0.15, 0.15)
    amp, wavelength = rng.uniform(0.03, 0.22), rng.uniform(0.7, 1.8)
    wobble, phase, mean_width = rng.uniform(0.05, 0.15), rng.uniform(0, TAU), rng.uniform(0.05, 0.14)
    centre_noise, width_noise = f.noise_fn(1.5, 2), f.noise_fn(2.0, 2)

    def distance(x, y):  # to the nearer bank, in world units; < 0 in the water
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * x + s * (y - offset), -s * x + c * (y - offset)
        centre, cs = meander(f, u, amp, wavelength, wobble, phase, centre_noise)
        width = mean_width * (1 + 0.4 * (width_noise(u, np.zeros_like(u)) - 0.5))
        return (np.abs(v - centre) - width) * cs

    d = distance(f.x, f.y)
    cov, colour = crowns(f, rng.uniform(0.03, 0.06), rng.uniform(0.3, 0.9), base=jitter(rng, FOREST),
                         keep=lambda cu, cv: np.abs(distance(cu, cv) - 0.035) < 0.03)
    paint(img, cov, colour)
    paint(img, cover(d - rng.uniform(0.003, 0.012), f.px), jitter(rng, mix(SAND, SOIL, rng.random())))
    water = _water(f, water_colour(rng), rng.uniform(0.01, 0.05))
    paint(img, cover(d, f.px), water)
    return img, {"amplitude": amp, "wavelength": wavelength, "width": mean_width}


def harbor(f: Field) -> tuple[np.ndarray, dict]:
    """A straight quay: paved land with sheds and container rows on one side, water on the other,
    piers into the water, boats moored along them and a few at anchor."""
    rng = f.rng
    u, v = f.rotated(rng.uniform(0, TAU))
    quay = rng.uniform(-0.3, 0.05)
    img = np.empty(f.x.shape + (3,))
    img[...] = jitter(rng, mix(ASPHALT, CONCRETE, rng.random()))
    shade(img, 1 + 0.1 * (f.noise(rng.uniform(5, 15), 2) - 0.5))
    t = f.cell_tables(4)
    block = rng.uniform(0.08, 0.16)
    gu, gv = u / block + rng.uniform(0, 50), (quay - v) / block
    i, j = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
    h = f.hash2(i, j, 9)
    shed = cover(box_sdf((gu - i - 0.5) * block, (gv - j - 0.5) * block, block * (0.25 + 0.2 * t[0, h]),
                         block * (0.25 + 0.2 * t[1, h])), f.px) * (t[2, h] < 0.6) * (gv > 0.4)
    roof_palette = np.stack([jitter(rng, pick(rng, ROOFS)) for _ in range(3)])
    paint(img, shed, roof_palette[(t[3, h] * 3).astype(int)])
    water = _water(f, water_colour(rng), rng.uniform(0.01, 0.05))
    wet = cover(quay - v, f.px)  # water on the v > quay side
    n_piers = int(rng.integers(2, 7))
    pier_colour = jitter(rng, CONCRETE)
    boat_palette = np.stack([jitter(rng, c, 0.05, 0.05) for c in ((0.92, 0.92, 0.92), (0.85, 0.85, 0.8),
                                                                    pick(rng, CARS))])
    spacing = 1.4 / n_piers
    length = rng.uniform(0.15, 0.4)
    boats = np.zeros(u.shape)
    boat_col = np.zeros(u.shape + (3,))
    piers = np.zeros(u.shape)
    tb = f.cell_tables(3)
    blen, bwid = rng.uniform(0.035, 0.07), rng.uniform(0.012, 0.02)
    for k in range(n_piers):
        pu = -0.7 + spacing * (k + 0.5) + rng.uniform(-0.1, 0.1) * spacing
        pw = rng.uniform(0.008, 0.02)
        lu, lv = u - pu, v - quay
        piers = np.maximum(piers, cover(box_sdf(lu, lv - length / 2, pw, length / 2), f.px))
        side = np.sign(lu)
        slot = np.floor(lv / (blen * 1.25)).astype(np.int64)
        bh = f.hash2(slot, np.full_like(slot, 2 * k) + (side > 0), 31)
        cu = np.abs(lu) - pw - bwid * 0.6 - 0.002
        cv = lv - (slot + 0.5) * blen * 1.25
        ell = 1 - (cu / (bwid / 2)) ** 2 - (cv / (blen / 2)) ** 2
        b = np.clip(ell * 4, 0, 1) * (tb[0, bh] < 0.7) * (lv > 0) * (lv < length)
        boats = np.maximum(boats, b)
        boat_col = np.where((b > 0)[..., None], boat_palette[(tb[1, bh] * 3).astype(int)], boat_col)
    paint(water, piers, pier_colour)
    paint(water, boats, boat_col)
    paint(img, wet, water)
    return img, {"quay": quay, "piers": n_piers, "pier_length": length}


def beach(f: Field) -> tuple[np.ndarray, dict]:
    """Sea on one side of a wavy shoreline: turquoise shallows, lines of surf, a wet strip, a dry
    sand band, then vegetation (sometimes a promenade road); parasols dot some beaches."""
    rng = f.rng
    u, v = f.rotated(rng.uniform(0, TAU), 0, rng.uniform(-0.2, 0.15))
    c, cs = meander(f, u, rng.uniform(0.0, 0.06), rng.uniform(0.5, 1.5), rng.uniform(0.05, 0.15),
                    rng.uniform(0, TAU))
    d = (v - c) * cs  # > 0: sea
    sand_w = rng.uniform(0.12, 0.4)
    img = _land(f)
    road = rng.random() < 0.3
    sand = jitter(rng, mix(SAND, SAND_GREY, rng.uniform(0, 0.6)), 0.05, 0.08)
    sand_img = np.empty(f.x.shape + (3,))
    sand_img[...] = sand
    shade(sand_img, 1 + 0.06 * (f.noise(rng.uniform(10, 30), 2) - 0.5) * 2)
    paint(sand_img, cover(np.abs(d + 0.01) - 0.01, f.px), sand * 0.78)  # the wet strip at the water line
    parasols = rng.uniform(0.0, 0.4) if rng.random() < 0.4 else 0.0
    cov, colour = crowns(f, 0.05, parasols, radius=(0.15, 0.22), base=pick(rng, ROOFS), spread=0.5)
    paint(sand_img, cov * (d < -0.03) * (d > -sand_w + 0.02), colour)
    paint(img, cover(np.maximum(-d - sand_w, d), f.px), sand_img)  # the band -sand_w < d < 0
    if road:
        paint(img, cover(np.abs(d + sand_w + 0.025) - 0.015, f.px), jitter(rng, ASPHALT))
    deep = water_colour(rng)
    shallow = jitter(rng, mix(deep, (0.35, 0.62, 0.6), rng.uniform(0.3, 0.8)))
    sea = _water(f, deep, 0.04)
    paint(sea, np.exp(-np.maximum(d, 0) / rng.uniform(0.05, 0.2)), shallow)
    surf_lines = int(rng.integers(1, 4))
    for k in range(surf_lines):
        at = 0.015 + k * rng.uniform(0.02, 0.05)
        foam = cover(np.abs(d - at - 0.01 * (f.noise(12, 1) - 0.5)) - rng.uniform(0.002, 0.006), f.px)
        paint(sea, foam * f.noise(rng.uniform(8, 20), 1) * 1.5 * (0.8 ** k), (0.92, 0.93, 0.92))
    paint(img, cover(-d, f.px), sea)
    return img, {"sand_width": sand_w, "surf_lines": surf_lines, "road": int(road), "parasols": parasols}


def residential(f: Field, density: tuple[float, float], plot_width: tuple[float, float],
                roof_fill: tuple[float, float], trees: tuple[float, float], paved: float) -> tuple[np.ndarray, dict]:
    """A street grid; blocks split into two rows of plots; a gabled roof (two shaded halves,
    casting a shadow) on a share `density` of plots; gardens, trees."""
    rng = f.rng
    angle = rng.uniform(0, math.pi)
    u, v = f.rotated(angle + rng.normal(0, 0.02))
    bu, bv = rng.uniform(0.25, 0.55), rng.uniform(0.14, 0.26)
    street = rng.uniform(0.015, 0.03)
    pw = rng.uniform(*plot_width)
    occupancy = rng.uniform(*density)
    fill = rng.uniform(*roof_fill)
    ground = mix(grass_colour(rng), jitter(rng, mix(CONCRETE, SOIL, rng.random()), 0.05, 0.1), paved)
    img = vegetation(f, ground)
    n_roofs = int(rng.integers(1, 4))
    roof_palette = np.stack([jitter(rng, pick(rng, ROOFS), 0.06, 0.12) for _ in range(n_roofs)])
    t = f.cell_tables(6)
    gu, gv = u / bu + rng.uniform(0, 50), v / bv + rng.uniform(0, 50)
    bi, bj = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
    lu, lv = (gu - bi) * bu, (gv - bj) * bv  # position inside the block, streets at its edges
    inner_u, inner_v = lu - street / 2, lv - street / 2
    row = (inner_v > (bv - street) / 2).astype(np.int64)
    pv_local = inner_v - row * (bv - street) / 2 - (bv - street) / 4
    pi_ = np.floor(inner_u / pw).astype(np.int64)
    pu_local = inner_u - (pi_ + 0.5) * pw
    h = f.hash2(bi * 64 + pi_, bj * 2 + row, 11)
    half_u, half_v = 0.5 * pw * fill * (0.8 + 0.2 * t[0, h]), (bv - street) / 4 * fill * (0.75 + 0.25 * t[1, h])
    off_u = (t[2, h] - 0.5) * (0.5 * pw - half_u)
    in_block = (inner_u > 0) & (inner_u < bu - street) & (inner_v > 0) & (inner_v < bv - street)
    present = (t[3, h] < occupancy) & in_block & (inner_u < np.floor((bu - street) / pw) * pw)
    sun = rng.uniform(0, TAU)
    roof = cover(box_sdf(pu_local - off_u, pv_local, half_u, half_v), f.px) * present
    cast = rng.uniform(0.004, 0.01)  # shadow length: the sun's elevation
    shadow = cover(box_sdf(pu_local - off_u - cast * math.cos(sun), pv_local - cast * math.sin(sun), half_u, half_v),
                   f.px) * present
    cov, colour = crowns(f, rng.uniform(0.03, 0.06), rng.uniform(*trees), radius=(0.3, 0.6), base=jitter(rng, FOREST))
    paint(img, cov * (1 - roof), colour)
    shade(img, 1 - 0.45 * shadow * (1 - roof))
    colour = roof_palette[(t[4, h] * n_roofs).astype(int)]
    ridge_u = half_u > half_v
    halves = np.where(ridge_u, pv_local > 0, pu_local - off_u > 0)
    colour = colour * np.where(halves ^ (math.sin(sun) > 0), 0.78, 1.0)[..., None]
    paint(img, roof, colour)
    inside = np.minimum(np.minimum(inner_u, bu - street - inner_u), np.minimum(inner_v, bv - street - inner_v))
    paint(img, cover(inside, f.px), jitter(rng, ASPHALT, 0.03, 0.15))  # streets: where inside < 0
    return img, {"angle_deg": math.degrees(angle), "occupancy": occupancy, "plot_width": pw, "roof_fill": fill,
                 "block_u": bu, "block_v": bv}


def dense_residential(f: Field) -> tuple[np.ndarray, dict]:
    return residential(f, density=(0.85, 1.0), plot_width=(0.045, 0.075), roof_fill=(0.75, 0.95),
                       trees=(0.0, 0.25), paved=0.6)


def sparse_residential(f: Field) -> tuple[np.ndarray, dict]:
    return residential(f, density=(0.25, 0.6), plot_width=(0.08, 0.14), roof_fill=(0.45, 0.7),
                       trees=(0.2, 0.6), paved=0.1)


def parking_lot(f: Field) -> tuple[np.ndarray, dict]:
    """Asphalt with double rows of marked bays and cars (body, dark windscreen) in a share of
    them, aisles between rows, sometimes a grass border with trees."""
    rng = f.rng
    u, v = f.rotated(rng.uniform(0, math.pi))
    bay_w, bay_l = rng.uniform(0.03, 0.045), rng.uniform(0.055, 0.08)
    aisle = rng.uniform(0.05, 0.09)
    pitch = 2 * bay_l + aisle
    occupancy = rng.uniform(0.3, 0.97)
    img = np.empty(f.x.shape + (3,))
    img[...] = jitter(rng, mix(ASPHALT, CONCRETE, rng.uniform(0, 0.5)), 0.03, 0.15)
    shade(img, 1 + 0.08 * (f.noise(rng.uniform(4, 12), 2) - 0.5))
    sv = v / pitch + rng.uniform(0, 50)
    r = np.floor(sv).astype(np.int64)
    lv = (sv - r) * pitch  # [0, pitch): bays of row A, then row B, then the aisle
    side = (lv > bay_l).astype(np.int64)
    in_rows = lv < 2 * bay_l
    su = u / bay_w + rng.uniform(0, 50)
    k = np.floor(su).astype(np.int64)
    lu = (su - k - 0.5) * bay_w
    line_w = rng.uniform(0.002, 0.004)
    line = cover(np.abs(np.abs(lu) - bay_w / 2) - line_w, f.px) * in_rows
    line = np.maximum(line, cover(np.abs(lv - bay_l) - line_w, f.px))
    paint(img, line * 0.8, (0.88, 0.88, 0.85))
    t = f.cell_tables(3)
    h = f.hash2(k, 2 * r + side, 23)
    cv = lv - np.where(side > 0, 1.5, 0.5) * bay_l
    car = cover(box_sdf(lu, cv, bay_w * 0.36, bay_l * 0.4) - 0.003, f.px) * (t[0, h] < occupancy) * in_rows
    palette = np.stack([jitter(rng, c, 0.04, 0.06) for c in CARS])
    body = palette[(t[1, h] * len(CARS)).astype(int)]
    windscreen = cover(box_sdf(lu, cv - np.where(side > 0, -1, 1) * bay_l * 0.12, bay_w * 0.3, bay_l * 0.08), f.px)
    body = body * (1 - 0.6 * windscreen)[..., None]
    paint(img, car, body)
    border = rng.random() < 0.5
    if border:
        bu, bv = f.rotated(rng.uniform(0, TAU), *rng.uniform(-0.5, 0.5, 2))
        edge = cover(-bv, f.px)
        green = vegetation(f, grass_colour(rng))
        cov, colour = crowns(f, 0.06, 0.6, base=jitter(rng, FOREST))
        paint(green, cov, colour)
        paint(img, edge, green)
    return img, {"occupancy": occupancy, "bay_width": bay_w, "aisle": aisle, "border": int(border)}


def _roads_ground(f: Field) -> np.ndarray:
    """Ground around roads and runways: grass, dry or mown, some trees or lots."""
    rng = f.rng
    img = vegetation(f, grass_colour(rng))
    cov, colour = crowns(f, rng.uniform(0.04, 0.08), rng.uniform(0.0, 0.4), base=jitter(rng, FOREST))
    paint(img, cov, colour)
    return img


def intersection(f: Field) -> tuple[np.ndarray, dict]:
    """Two roads crossing (or a T junction) at near right angles: lanes with dashed centre lines,
    solid edge lines, zebra crossings at the junction, a few cars, lots or buildings at the corners."""
    rng = f.rng
    img = _roads_ground(f)
    angle = rng.uniform(0, math.pi)
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    ua, va = f.rotated(angle, cx, cy)
    ub, vb = f.rotated(angle + math.pi / 2 + rng.normal(0, 0.15), cx, cy)
    wa, wb = rng.uniform(0.05, 0.11), rng.uniform(0.04, 0.1)
    tee = rng.random() < 0.3
    corners = rng.random() < 0.6
    if corners:  # per corner: a paved lot set back from the roads, a building on it, or neither
        t = f.cell_tables(4)
        qh = f.hash2((vb > 0).astype(np.int64), (va > 0).astype(np.int64), 41)
        setback = rng.uniform(0.03, 0.06)
        lot = cover(np.maximum(wa / 2 + setback - np.abs(va), wb / 2 + setback - np.abs(vb)), f.px)
        paint(img, lot * (t[0, qh] < 0.6), jitter(rng, mix(ASPHALT, CONCRETE, rng.random()), 0.03, 0.1))
        at = wa / 2 + setback + rng.uniform(0.1, 0.2)
        half = (0.05 + 0.1 * t[1, qh]) * (0.5 + 0.5 * t[2, qh])
        building = cover(box_sdf(np.abs(vb) - at, np.abs(va) - at, half, half * 1.3), f.px) * (t[0, qh] < 0.4)
        roof_col = np.stack([jitter(rng, pick(rng, ROOFS)) for _ in range(2)])
        paint(img, building, roof_col[(t[3, qh] * 2).astype(int)])
    da = np.abs(va) - wa / 2
    db = np.abs(vb) - wb / 2
    if tee:
        db = np.where(va > 0, db, np.inf)
    road = cover(np.minimum(da, db), f.px)
    asphalt = jitter(rng, ASPHALT, 0.03, 0.15)
    paint(img, road, asphalt)
    white = (0.9, 0.9, 0.88)
    away_a, away_b = np.abs(vb) > wb / 2 + 0.01, np.abs(va) > wa / 2 + 0.01
    dash = stripes(ua, rng.uniform(0.05, 0.09), f.px)
    paint(img, cover(np.abs(va) - 0.0025, f.px) * dash * away_a, white)
    paint(img, cover(np.abs(np.abs(va) - wa / 2 + 0.006) - 0.002, f.px) * away_a, white)
    dash_b = stripes(ub, rng.uniform(0.05, 0.09), f.px) * (db < np.inf)
    paint(img, cover(np.abs(vb) - 0.0025, f.px) * dash_b * away_b, white)
    zebra = stripes(va, 0.012, f.px) * cover(np.abs(np.abs(vb) - wb / 2 - 0.02) - 0.01, f.px) * (da < 0)
    zebra_b = stripes(vb, 0.012, f.px) * cover(np.abs(np.abs(va) - wa / 2 - 0.02) - 0.01, f.px) * (db < 0)
    paint(img, np.maximum(zebra, zebra_b) * 0.85, white)
    n_cars = rng.uniform(0.0, 0.4)
    t = f.cell_tables(2)
    k = np.floor(ua / 0.08).astype(np.int64)
    lane = (va > 0).astype(np.int64)
    h = f.hash2(k, lane, 51)
    car = cover(box_sdf(ua - (k + 0.5) * 0.08, np.abs(va) - wa / 4, 0.02, 0.009), f.px) * (t[0, h] < n_cars) * away_a
    palette = np.stack([jitter(rng, c, 0.04, 0.06) for c in CARS])
    paint(img, car, palette[(t[1, h] * len(CARS)).astype(int)])
    return img, {"angle_deg": math.degrees(angle), "width_a": wa, "width_b": wb, "tee": int(tee),
                 "corners": int(corners), "cars": n_cars}


def runway(f: Field) -> tuple[np.ndarray, dict]:
    """One long wide strip: edge lines, a dashed centre line, threshold bars near one end, touch-
    down marks; a parallel taxiway with links; airfield grass."""
    rng = f.rng
    img = vegetation(f, grass_colour(rng), grain=0.06)
    angle = rng.uniform(0, math.pi)
    u, v = f.rotated(angle, 0, rng.uniform(-0.2, 0.2))
    width = rng.uniform(0.11, 0.2)
    surface = jitter(rng, mix(ASPHALT, CONCRETE, rng.uniform(0, 0.7)), 0.03, 0.12)
    taxi = rng.random() < 0.7
    side = 1 if rng.random() < 0.5 else -1
    offset = width / 2 + rng.uniform(0.08, 0.2)
    if taxi:
        tv = v - side * offset
        strip = np.abs(tv) - 0.025
        link_at = rng.uniform(-0.5, 0.5)
        link = np.maximum(np.abs(u - link_at) - 0.02, np.maximum(side * v - offset, -side * v))
        paint(img, cover(np.minimum(strip, link), f.px), surface * rng.uniform(0.85, 1.05))
        paint(img, cover(np.abs(tv) - 0.002, f.px) * (np.abs(u - link_at) > 0.02), (0.8, 0.7, 0.2))
    paint(img, cover(np.abs(v) - width / 2, f.px), surface)
    shade(img, 1 + 0.06 * (f.noise(rng.uniform(5, 10), 2) - 0.5) * cover(np.abs(v) - width / 2, f.px))
    white = (0.92, 0.92, 0.9)
    paint(img, cover(np.abs(np.abs(v) - width / 2 + 0.008) - 0.003, f.px), white)
    paint(img, cover(np.abs(v) - 0.004, f.px) * stripes(u, rng.uniform(0.1, 0.16), f.px, 0.55), white)
    end = rng.uniform(-0.4, 0.4)
    bars = stripes(v, width / 8, f.px, 0.55) * cover(np.abs(u - end) - 0.04, f.px)
    bars *= cover(np.abs(v) - width * 0.4, f.px)
    paint(img, bars * (rng.random() < 0.6), white)
    touchdown = cover(box_sdf(u - end - 0.12, np.abs(v) - width * 0.22, 0.03, 0.008), f.px)
    paint(img, touchdown * (rng.random() < 0.5), white)
    return img, {"angle_deg": math.degrees(angle), "width": width, "taxiway": int(taxi)}


def railway(f: Field) -> tuple[np.ndarray, dict]:
    """Parallel tracks (two dark rails and faint sleepers each) on a ballast bed, straight or
    gently curving; grass and sometimes a parallel road beyond."""
    rng = f.rng
    img = _roads_ground(f)
    u, v = f.rotated(rng.uniform(0, math.pi), 0, rng.uniform(-0.15, 0.15))
    curve = rng.uniform(-0.4, 0.4)
    v = v - curve * u * u
    n = int(rng.integers(2, 7))
    spacing = rng.uniform(0.035, 0.05)
    half = (n - 1) * spacing / 2
    bed = cover(np.abs(v) - half - rng.uniform(0.015, 0.03), f.px)
    ballast = jitter(rng, mix(SOIL, SAND_GREY, rng.random()), 0.05, 0.12)
    paint(img, bed, ballast)
    shade(img, 1 + 0.12 * bed * (f.noise(rng.uniform(40, 70), 1) - 0.5))
    centres = np.round(v / spacing + (n - 1) / 2) - (n - 1) / 2
    centres = np.clip(centres, -(n - 1) / 2, (n - 1) / 2) * spacing
    lv = v - centres
    gauge = rng.uniform(0.011, 0.016)
    sleepers = stripes(u, rng.uniform(0.008, 0.014), f.px, 0.4) * cover(np.abs(lv) - gauge * 0.85, f.px)
    shade(img, 1 - 0.25 * sleepers)
    rails = cover(np.abs(np.abs(lv) - gauge / 2) - 0.0025, f.px)
    paint(img, rails, jitter(rng, (0.22, 0.2, 0.19), 0.05, 0.15))
    road = rng.random() < 0.3
    if road:
        paint(img, cover(np.abs(v - half - 0.08) - 0.02, f.px), jitter(rng, ASPHALT))
    return img, {"tracks": n, "spacing": spacing, "curvature": curve, "road": int(road)}


PAINTERS = {
    "beach": beach,
    "circular_farmland": circular_farmland,
    "dense_residential": dense_residential,
    "desert": desert,
    "forest": forest,
    "harbor": harbor,
    "intersection": intersection,
    "lake": lake,
    "meadow": meadow,
    "parking_lot": parking_lot,
    "railway": railway,
    "rectangular_farmland": rectangular_farmland,
    "river": river,
    "runway": runway,
    "sparse_residential": sparse_residential,
}
