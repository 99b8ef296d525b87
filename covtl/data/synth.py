"""The embedded synthetic default dataset: every real layout of ``../shared/data``, drawn.

covtl runs its whole study without real data (CI and the README's main job) on a data root
written by :func:`generate`. The folders copy the published layouts file for file in
structure (names, separators, list formats, MetaInfo quirks), so the loaders of
:mod:`covtl.data.datasets` read both::

    covid-ct/             COVID19-CT (UCSD-AI4H): Images-processed/, Data-split/, two MetaInfo files
    covidx-mini/          COVIDx format: train.txt, test.txt, train/, test/ (frontal chest X-rays)
    lung-ct-unlabeled/    slices/<volume>_<index>.jpg (unlabeled CT, grouped by volume)
    medseg-covid/         images/<n>.jpg + masks/<n>.png (white = infection; masks are exact)
    natural/ifs-fractals/ ImageFolder train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, classes.tsv
    SYNTHETIC.json        generator version, seed, scale, counts, lobe boxes, library versions
    SYNTHETIC-index.csv   one row per CT / X-ray image: patient, split, finding, level, lung box

Each dataset folder also has a ``SHA256SUMS`` (``sha256sum -c SHA256SUMS`` inside it), as the
real folders do.

Geometry of an axial CT slice (:func:`render_ct_slice`)
--------------------------------------------------------
Radiological convention: image top = anterior, image left = the patient's right. A slice is
drawn in *body units*: pixel offsets from the body centre, rotated by a small angle and divided
by ``ay``, the body's vertical semi-axis in pixels (so circles stay circles). In these units

- body: ellipse of semi-axes (``aspect`` ~1.3-1.5, 1) with a wavy outline (harmonics 2-4) and a
  flattened back; subcutaneous fat ring (thickness 0.04-0.12) and a muscle ring (0.04-0.07,
  thicker anteriorly: pectorals); ribs as bony ovals in the chest wall, sternum in front;
- spine: vertebral body disc at (0, 0.60), radius 0.15, cortex, canal, posterior elements;
- mediastinum: a fat band whose half-width grows from 0.05 in front (anterior junction) to
  0.12-0.18, with the descending aorta, by level the superior vena cava, aortic arch,
  ascending aorta and pulmonary trunk, the trachea (levels < 0.38) or the main bronchi
  (0.38-0.50), and the heart (a tilted ellipse to the image right of the midline, appearing
  from level 0.33 and full size from 0.62, with an epicardial fat rim);
- lungs: the chest cavity minus mediastinum, heart, spine and aorta, cut by a level envelope
  (small apices at level 0) and, at the base, by the liver dome (right, level > 0.78) and the
  stomach/spleen (left, level > 0.85). Parenchyma -870 HU with a posterior (dependent)
  gradient; vessels are blurred branch trees from each hilum plus cross-sectional dots.

``level`` is the slice position from apex (0) to diaphragm (1); slices of one patient share
anatomy and disease and differ only in level (and noise), so they are correlated.
Acquisition per patient: lung window (level -720..-480 HU, width 1150..1700 HU; 6 % of the
covid-ct patients get a soft-tissue window of width ~400 HU, where ground glass nearly
vanishes), Gaussian noise 12-40 HU, blur 0.5-1.1 px; outside the body the image is exactly 0.

Lobes (label map from :func:`render_ct_slice`; index = region class of paper A's region task):
inside the bounding box of *each* lung, ``u`` runs from the lateral (0) to the medial (1) edge
and ``v`` from the anterior (0) to the posterior (1) edge. The major fissure is the line
``v = F(level) + t (u - 0.5)`` with ``F = 0.72 - 0.40 level`` (+ a patient offset within
+-0.04, tilt ``t`` within +-0.08): behind it lies the lower lobe (rl / ll). In the right lung
the minor fissure ``v = F(level) * clip(1.25 - level, 0.05, 1)`` splits the rest into the
upper lobe (ru, in front) and the middle lobe (rm); the middle lobe appears from level ~0.25
and grows towards the base. The left upper lobe (lu) includes the lingula. So, as in real
axial slices, upper lobes are anterior and lower lobes posterior, and the lower lobes take a
larger share of the slice towards the base. Over levels 0.2-0.95 the lobes have these mean
relative location tuples ``(x, y, w, h)`` (centre and size of the 5th-95th percentile extent,
as fractions of the box that encloses both lungs, unrotated slice; :data:`LOBE_BOXES`)::

    ru (0.29, 0.18, 0.33, 0.27)   rm (0.23, 0.40, 0.35, 0.14)   rl (0.22, 0.70, 0.34, 0.41)
    lu (0.76, 0.26, 0.37, 0.40)   ll (0.79, 0.71, 0.33, 0.42)

Disease models (CT)
-------------------
- ``covid`` (COVID-19): 4 + Poisson(1..6) ground-glass opacities (GGO: +550 to +850 HU, soft
  irregular margins, vessels still visible through them; semi-axes 0.3-0.5 body units along the
  pleura and 0.4-0.7 of that across it,
  elongated along the pleura) centred at most 0.1 of the radius inside the chest wall
  (subpleural), 75 % of them posterior-lateral at levels 0.45-0.9 (lower lobes), the rest
  anywhere; bilateral in 85 % of patients. Patterns: pure GGO, crazy paving (GGO with
  reticular lines) or GGO with consolidated cores. A fifth of the patients are faint (+400 to
  +550 HU). Every COVID slice of covid-ct and medseg shows a lesion of at least 1 % of the
  image (so at least ~20 pixels at 48 px). Measured on rendered
  slices: ~80 % of lesion pixels lie in the lower lobes (lungs: ~55 %) and ~80 % in the outer
  third of the lung by distance to the pleura (lungs: ~58 %); tests/test_synth.py checks this.
- negatives (NonCOVID, share of patients): ``normal`` 0.38; ``lobar`` consolidation 0.12 (one
  lobe, dense, straight fissure edge, air bronchograms); ``nodules`` 0.14 (1-6 solid nodules,
  some with a ground-glass halo); ``emphysema`` 0.10 (upper-lobe low-attenuation holes, a few
  bullae); ``dependent`` 0.13 (bilateral posterior atelectasis bands or effusions: the hard
  negative that mimics lower-posterior COVID); ``perihilar`` 0.13 (bilateral *central* GGO,
  e.g. edema: COVID-like texture, non-peripheral distribution).
- The lesion mask marks the drawn abnormality (opacity > 0.3, inside the lungs); for medseg it
  is the COVID infection. Generator 1.4 made the COVID opacities larger and denser than 1.1
  (whose lesions were a few pixels wide at 64 px and which no network of the quick profile
  learnt): a random-init ResNet-18 trained 8 epochs at 48 px with B's recipe reaches a test AUC
  of about 0.77 (the learnability check behind these parameters).

What transfer can exploit (the planted structure, by source task):

- ``lung-ct-unlabeled`` is drawn by the same CT generator (same anatomy, windows and noise;
  60 % of its volumes are COVID patients), so self-supervision on it (B's LUNA stage) sees the
  target's anatomy and lesion appearance without labels;
- ``covidx-mini``'s COVID-19 class is hazy opacity in the *peripheral lower zones*, the same
  distribution as the CT lesions, in another modality (STL-M);
- the natural-image stand-in (fractals) shares nothing with CT but edges and textures (STL-N),
  so it can only help through generic low-level filters.

Chest X-ray model (:func:`render_cxr`): torso with neck and shoulders, two dark lungs above
diaphragm domes, heart shadow to the patient's left, mediastinum and spine, posterior ribs,
clavicles, vascular markings from the hila. ``pneumonia`` = one dense focal/lobar opacity (75 %)
or bilateral perihilar haze (25 %); ``COVID-19`` = hazy opacities in the peripheral lower zones,
bilateral in 85 %; ``normal`` = none.

Natural-image stand-in (:func:`render_fractal`): formula-driven categories, as in FractalDB
(Kataoka et al. 2020): each class is one random contractive affine iterated function system
(2-4 maps); an image is a chaos-game render with jittered maps, coloured by map index, with a
random colour, scale, rotation, flip and a textured background, 64 px.

Default counts (``scale="default"``; ``"tiny"`` in :data:`SCALES`)
--------------------------------------------------------------------
covid-ct 349 COVID (191/60/98) + 397 NonCOVID (234/58/105) images, patient-level splits,
1-8 slices per patient; covidx-mini 300 train + 90 test (equal thirds of COVID-19 / pneumonia /
normal), 1-3 images per patient; lung-ct-unlabeled 20 volumes x 20 slices; medseg-covid 50
pairs from 10 patients; natural 100 classes x (50 train + 10 val).

Quirks copied from the real data: COVID ``.png`` files of which ~10 % hold JPEG data, modes L,
RGB and RGBA; per-patient image sizes; NonCOVID ``.jpg`` (crawled_patient) and ``.png``
(medpix_patient) names; ``NonCOVID-CT-MetaInfo.xlsx`` is CSV text; ``COVID-CT-MetaInfo.xlsx`` is
an xlsx without header (file name, "Patient n", DOI, caption; a quarter of the names lack the
extension; a trailing caption-only row); COVID train/val lists end without a newline; the
lung-ct-unlabeled slices are rotated with the anterior side to the right and the medseg slices
with it to the left (:data:`ORIENTATION`). Every CT image of covid-ct goes through one JPEG
round trip before it is stored, so the container format (PNG or JPEG) carries no label signal.

Determinism: everything is drawn from ``numpy.random.default_rng([seed, part, ...])`` per
patient / image, so the bytes depend only on the seed, the scale and the library versions
(numpy's distributions, Pillow's zlib and libjpeg); ``SYNTHETIC.json`` records those versions.
Worker processes do not change the result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from scipy import ndimage

from ..io import dumps_json

__all__ = [
    "CT_FINDINGS",
    "CTPatient",
    "CTSlice",
    "CXRImage",
    "CXR_LABELS",
    "GENERATOR_VERSION",
    "LOBES",
    "LOBE_BOXES",
    "NATURAL_NAME",
    "NONCOVID_MIX",
    "ORIENTATION",
    "PARTS",
    "SCALES",
    "Lesion",
    "SynthScale",
    "generate",
    "ifs_system",
    "lobe_map",
    "pleura_distance",
    "render_ct_slice",
    "render_cxr",
    "render_fractal",
    "render_fractals",
    "sample_ct_patient",
]

#: bump when the drawn content of any file changes
GENERATOR_VERSION = "1.4"
#: dataset folders written by :func:`generate`, in order
PARTS = ("covid-ct", "covidx-mini", "lung-ct-unlabeled", "medseg-covid", "natural")
#: the five lobe regions of paper A's region task; lobe-map values 0..4 in this order, -1 = not lung
LOBES = ("ru", "rm", "rl", "lu", "ll")
#: mean relative location tuples (x centre, y centre, width, height) of each lobe inside the box
#: that encloses both lungs (unrotated slice), levels 0.2-0.95; test_synth checks them against lobe_map
LOBE_BOXES = {
    "ru": (0.29, 0.18, 0.33, 0.27),
    "rm": (0.23, 0.40, 0.35, 0.14),
    "rl": (0.22, 0.70, 0.34, 0.41),
    "lu": (0.76, 0.26, 0.37, 0.40),
    "ll": (0.79, 0.71, 0.33, 0.42),
}
#: folder name of the natural-image stand-in under natural/
NATURAL_NAME = "ifs-fractals"
#: np.rot90 ``k`` applied to stored CT slices per part (1 = counter-clockwise: anterior to the left)
ORIENTATION = {"covid-ct": 0, "lung-ct-unlabeled": -1, "medseg-covid": 1}
CT_FINDINGS = ("covid", "normal", "lobar", "nodules", "emphysema", "dependent", "perihilar")
#: share of each finding among NonCOVID patients
NONCOVID_MIX = {"normal": 0.38, "lobar": 0.12, "nodules": 0.14, "emphysema": 0.10, "dependent": 0.13,
                "perihilar": 0.13}
CXR_LABELS = ("COVID-19", "pneumonia", "normal")
_PART_CODE = {name: i + 1 for i, name in enumerate(PARTS)}


@dataclass(frozen=True)
class SynthScale:
    """How much to draw. Split tuples are (train, val, test) image counts."""

    ct_size: int = 256  # covid-ct canvas height before per-patient jitter (px)
    covid: tuple[int, int, int] = (191, 60, 98)  # COVID images per split
    noncovid: tuple[int, int, int] = (234, 58, 105)  # NonCOVID images per split
    cxr_size: int = 256  # chest X-ray height (px)
    cxr_train: tuple[int, int, int] = (100, 100, 100)  # COVID-19, pneumonia, normal train images
    cxr_test: tuple[int, int, int] = (30, 30, 30)  # COVID-19, pneumonia, normal test images
    volumes: int = 20  # lung-ct-unlabeled volumes
    volume_slices: int = 20  # slices per volume
    volume_size: int = 224  # lung-ct-unlabeled / medseg slice height (px)
    medseg_pairs: int = 50  # medseg image/mask pairs
    medseg_patients: int = 10  # patients they come from
    natural_classes: int = 100  # fractal classes
    natural_train: int = 50  # train images per class
    natural_val: int = 10  # val images per class
    natural_size: int = 64  # natural image size (px)


SCALES = {
    "default": SynthScale(),
    "tiny": SynthScale(ct_size=128, covid=(12, 4, 6), noncovid=(14, 4, 6), cxr_size=128,
                       cxr_train=(6, 6, 6), cxr_test=(3, 3, 3), volumes=3, volume_slices=4,
                       volume_size=128, medseg_pairs=6, medseg_patients=2, natural_classes=10,
                       natural_train=6, natural_val=2, natural_size=64),
}


# --------------------------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------------------------

def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma, mode="nearest", truncate=3.0) if sigma > 0.05 else a


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-variance noise smooth on a scale of ``cell`` pixels (bicubic upsampling)."""
    h, w = shape
    gh, gw = max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    fine = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    return fine / max(float(fine.std()), 1e-6)


def _splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sum point weights ``w`` at pixel positions (ys, xs) into an HxW map (points off-canvas dropped)."""
    h, wd = shape
    iy, ix = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
    flat = np.bincount(iy[ok] * wd + ix[ok], weights=w[ok], minlength=h * wd)
    return flat.reshape(h, wd).astype(np.float32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) inclusive of a boolean mask, None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def pleura_distance(lung: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of every lung pixel to the nearest non-lung pixel (0 outside)."""
    return ndimage.distance_transform_edt(lung).astype(np.float32)


# --------------------------------------------------------------------------------------------
# CT: patients, anatomy, lobes, lesions
# --------------------------------------------------------------------------------------------

@dataclass
class Lesion:
    """One drawn abnormality, in body units (see the module docstring).

    kind: ggo | crazy | consolidation | nodule | bulla | lobar | holes | band | effusion. ``side`` is -1
    for the right lung (image left), +1 for the left lung, 0 for both. Present at levels within
    ``zext`` of ``z``; its in-plane size shrinks as sqrt(1 - ((level - z)/zext)^2).
    """

    kind: str
    side: int
    x: float = 0.0
    y: float = 0.0
    z: float = 0.5
    zext: float = 0.1
    a: float = 0.1  # semi-axis along theta
    b: float = 0.1  # semi-axis across theta
    theta: float = 0.0
    strength: float = 200.0  # HU added (ggo) or target HU (dense kinds)
    lobe: int = -1  # lobar: lobe index
    amount: float = 0.5  # lobar coverage, holes density, band thickness


@dataclass
class CTPatient:
    """Anatomy, acquisition and disease of one synthetic patient (all slices share it)."""

    finding: str
    height: int
    width: int
    cx: float  # body centre (px)
    cy: float
    ay: float  # body vertical semi-axis (px) = the body unit
    aspect: float  # body horizontal / vertical semi-axis
    angle: float  # in-plane rotation (rad)
    harmonics: np.ndarray  # (3, 3): k, amplitude, phase of the outline
    back: float  # flat back at y = back
    fat: float
    muscle: float
    mediastinum: float  # half-width of the mediastinal band
    heart: tuple[float, float, float, float, float]  # x, y, a, b, tilt
    lung_hu: float
    fissure: tuple[float, float, float, float]  # offset right, offset left, tilt right, tilt left
    branches: np.ndarray  # (n, 6): side, angle, length, start x, start y, generation
    noise_hu: float
    blur: float  # px at 256 px
    window: tuple[float, float]  # (low, width) HU
    jpeg_quality: int  # covid-ct JPEG round trip
    lesions: list[Lesion] = field(default_factory=list)


def _lung_window(rng: np.random.Generator) -> tuple[float, float]:
    level, width = rng.uniform(-720, -480), rng.uniform(1150, 1700)
    return level - width / 2, width


def sample_ct_patient(rng: np.random.Generator, finding: str = "normal", *, size: int = 256,
                      shape: tuple[int, int] | None = None, mediastinal_window: float = 0.0) -> CTPatient:
    """Draw one patient: anatomy, acquisition (window, noise, blur) and the lesions of ``finding``.

    ``shape`` = (height, width) of the canvas; by default height ~ size * U(0.88, 1.12) and width
    ~ height * U(1.0, 1.2). ``mediastinal_window`` = probability of a soft-tissue window
    (W ~400 HU) instead of a lung window, in which ground glass is nearly invisible.
    """
    if finding not in CT_FINDINGS:
        raise ValueError(f"unknown CT finding {finding!r}; choose one of {', '.join(CT_FINDINGS)}")
    if shape is None:
        h = int(round(size * rng.uniform(0.88, 1.12)))
        shape = (h, int(round(h * rng.uniform(1.0, 1.2))))
    h, w = shape
    aspect = rng.uniform(1.28, 1.5)
    ay = min(h * rng.uniform(0.34, 0.41), w / (2.0 * aspect) * 0.94)
    harmonics = np.stack([np.array([2.0, 3.0, 4.0]), rng.uniform(0.0, 0.035, 3),
                          rng.uniform(0, 2 * np.pi, 3)], 1)
    branches = []  # vessel trees from each hilum: side, angle, length, start x, start y, generation
    for side in (-1, 1):
        hilum = (side * 0.28, rng.uniform(-0.06, 0.04))
        for _ in range(int(rng.integers(8, 12))):
            ang = (np.pi if side < 0 else 0.0) - side * rng.uniform(-1.55, 1.55)
            length = rng.uniform(0.5, 0.95)
            branches.append((side, ang, length, *hilum, 0))
            for _ in range(int(rng.integers(1, 4))):
                t = rng.uniform(0.25, 0.7)
                start = (hilum[0] + t * length * math.cos(ang), hilum[1] + t * length * math.sin(ang) * 0.85)
                branches.append((side, ang + rng.choice([-1, 1]) * rng.uniform(0.3, 0.8),
                                 (1 - t) * length * rng.uniform(0.6, 1.0), *start, 1))
    if rng.random() < mediastinal_window:
        window = (rng.uniform(20, 60) - 200.0, rng.uniform(350, 450))
    else:
        window = _lung_window(rng)
    p = CTPatient(
        finding=finding, height=h, width=w,
        cx=w / 2 + rng.uniform(-0.04, 0.04) * w, cy=h / 2 + rng.uniform(-0.05, 0.03) * h,
        ay=float(ay), aspect=float(aspect), angle=float(rng.uniform(-0.06, 0.06)),
        harmonics=harmonics.astype(np.float32), back=float(rng.uniform(0.86, 0.96)),
        fat=float(rng.uniform(0.04, 0.12)), muscle=float(rng.uniform(0.04, 0.07)),
        mediastinum=float(rng.uniform(0.12, 0.18)),
        heart=(float(rng.uniform(0.12, 0.24)), float(rng.uniform(-0.2, -0.05)),
               float(rng.uniform(0.42, 0.54)), float(rng.uniform(0.3, 0.4)), float(rng.uniform(-0.5, -0.15))),
        lung_hu=float(rng.uniform(-890, -850)),
        fissure=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04)),
                 float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        branches=np.array(branches, dtype=np.float32),
        noise_hu=float(rng.uniform(12, 40)), blur=float(rng.uniform(0.5, 1.1)), window=window,
        jpeg_quality=int(rng.integers(72, 96)),
    )
    p.lesions = _sample_lesions(rng, p, finding)
    return p


def _wall_point(p: CTPatient, phi: float, depth: float) -> tuple[float, float]:
    """Body-unit point at body angle ``phi``, ``depth`` (fraction of the radius) inside the chest wall."""
    c = (1.0 - p.fat - p.muscle * (1 + 0.8 * max(0.0, -math.sin(phi))) - 0.015) * (1.0 - depth)
    r = 1.0 + float(np.sum(p.harmonics[:, 1] * np.cos(p.harmonics[:, 0] * phi + p.harmonics[:, 2])))
    return p.aspect * c * r * math.cos(phi), c * r * math.sin(phi)


def _sample_lesions(rng: np.random.Generator, p: CTPatient, finding: str) -> list[Lesion]:
    les: list[Lesion] = []
    if finding == "covid":
        n = 4 + int(rng.poisson(rng.uniform(1.0, 6.0)))
        bilateral = rng.random() < 0.85
        pattern = rng.choice(["ggo", "crazy", "mixed"], p=[0.55, 0.25, 0.20])
        faint = rng.random() < 0.2
        first = int(rng.choice([-1, 1]))
        for i in range(max(n, 2 if bilateral else 1)):
            side = first * (-1) ** i if bilateral else first
            typical = rng.random() < 0.75
            if typical:  # posterior-lateral, lower
                t = rng.beta(1.3, 2.4)
                phi_r = np.pi / 2 + 0.25 + t * (np.pi / 2 + 0.75)
                z = 0.45 + 0.45 * rng.beta(2.0, 1.5)
            else:
                phi_r = rng.uniform(np.pi / 2 + 0.25, 3 * np.pi / 2 - 0.3)
                z = rng.uniform(0.2, 0.9)
            phi = phi_r if side < 0 else np.pi - phi_r
            x, y = _wall_point(p, phi, rng.uniform(0.0, 0.1))
            kind = "ggo"
            if pattern == "crazy" and rng.random() < 0.6:
                kind = "crazy"
            elif pattern == "mixed" and rng.random() < 0.5:
                kind = "consolidation"
            strength = rng.uniform(400, 550) if faint else rng.uniform(550, 850)
            a = rng.uniform(0.3, 0.5)
            les.append(Lesion(kind, side, x, y, float(z), float(rng.uniform(0.15, 0.3)), a,
                              a * rng.uniform(0.4, 0.7), phi + np.pi / 2, float(strength),
                              amount=float(rng.uniform(-80, 20))))
    elif finding == "lobar":
        lobe = int(rng.choice(5, p=[0.15, 0.1, 0.3, 0.15, 0.3]))
        z = {0: 0.35, 1: 0.7, 2: 0.75, 3: 0.4, 4: 0.75}[lobe] + rng.uniform(-0.1, 0.1)
        les.append(Lesion("lobar", -1 if lobe < 3 else 1, z=z, zext=rng.uniform(0.2, 0.35),
                          strength=rng.uniform(-60, 40), lobe=lobe, amount=rng.uniform(0.5, 1.0)))
    elif finding == "nodules":
        n = 1 if rng.random() < 0.5 else int(rng.integers(2, 7))
        z0 = rng.uniform(0.25, 0.85)
        for _ in range(n):
            side = int(rng.choice([-1, 1]))
            phi_r = rng.uniform(np.pi / 2 + 0.3, 3 * np.pi / 2 - 0.2)
            phi = phi_r if side < 0 else np.pi - phi_r
            x, y = _wall_point(p, phi, rng.uniform(0.1, 0.6))
            r = rng.uniform(0.025, 0.08)
            halo = rng.random() < 0.2
            les.append(Lesion("nodule", side, x, y, float(np.clip(z0 + rng.normal(0, 0.08), 0.15, 0.95)),
                              float(r * 2.5), r, r * rng.uniform(0.8, 1.0), 0.0, float(rng.uniform(-20, 60)),
                              amount=1.0 if halo else 0.0))
    elif finding == "emphysema":
        les.append(Lesion("holes", 0, z=0.5, zext=2.0, amount=rng.uniform(0.4, 1.0)))
        for _ in range(int(rng.integers(0, 3))):
            side = int(rng.choice([-1, 1]))
            phi_r = rng.uniform(np.pi + 0.2, 3 * np.pi / 2 - 0.2)
            phi = phi_r if side < 0 else np.pi - phi_r
            x, y = _wall_point(p, phi, rng.uniform(0.02, 0.08))
            r = rng.uniform(0.06, 0.14)
            les.append(Lesion("bulla", side, x, y, float(rng.uniform(0.2, 0.55)), r * 2.0, r, r * 0.8, 0.0,
                              -990.0))
    elif finding == "dependent":
        kind = "effusion" if rng.random() < 0.4 else "band"
        for side in (-1, 1):
            if side == 1 and rng.random() < 0.2:
                continue
            les.append(Lesion(kind, side, z=rng.uniform(0.75, 0.95), zext=rng.uniform(0.3, 0.5),
                              strength=rng.uniform(-450, -150) if kind == "band" else rng.uniform(0, 25),
                              amount=rng.uniform(0.05, 0.16)))
    elif finding == "perihilar":
        z0 = rng.uniform(0.35, 0.7)
        for side in (-1, 1):
            for _ in range(int(rng.integers(1, 4))):
                x = side * rng.uniform(0.4, 0.65)
                y = rng.uniform(-0.2, 0.2)
                a = rng.uniform(0.14, 0.28)
                les.append(Lesion("ggo", side, x, y, float(z0 + rng.uniform(-0.1, 0.1)),
                                  float(rng.uniform(0.15, 0.3)), a, a * rng.uniform(0.6, 1.0),
                                  rng.uniform(0, np.pi), float(rng.uniform(110, 300))))
    return les


def _major_fissure(level: float) -> float:
    return 0.72 - 0.40 * level


def _minor_fissure(level: float) -> float:
    return _major_fissure(level) * min(1.0, max(0.05, 1.25 - level))


def lobe_map(lung_right: np.ndarray, lung_left: np.ndarray, level: float,
             fissure: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """Lobe labels (int8 HxW: 0..4 = ru, rm, rl, lu, ll; -1 = not lung) from the two lung masks.

    The fissures are lines in each lung's own bounding box (see the module docstring);
    ``fissure`` = (offset right, offset left, tilt right, tilt left) of the major fissures.
    """
    lobes = np.full(lung_right.shape, -1, np.int8)
    for side, lung in ((-1, lung_right), (1, lung_left)):
        box = _bbox(lung)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        v = ((np.arange(y0, y1 + 1) - y0 + 0.5) / (y1 - y0 + 1))[:, None]
        u = ((np.arange(x0, x1 + 1) - x0 + 0.5) / (x1 - x0 + 1))[None, :]
        if side > 0:
            u = 1.0 - u  # the lateral edge of the left lung is on the image right
        off, tilt = (fissure[0], fissure[2]) if side < 0 else (fissure[1], fissure[3])
        lower = v > _major_fissure(level) + off + tilt * (u - 0.5)
        if side < 0:
            lab = np.where(lower, 2, np.where(v > _minor_fissure(level) + off * 0.5, 1, 0))
        else:
            lab = np.where(lower, 4, 3)
        window = lobes[y0:y1 + 1, x0:x1 + 1]
        inside = lung[y0:y1 + 1, x0:x1 + 1]
        window[inside] = lab[inside]
    return lobes


class CTSlice(NamedTuple):
    """One rendered axial slice."""

    image: np.ndarray  # uint8 HxW
    lesion: np.ndarray  # bool HxW: the drawn abnormality (inside the lungs)
    lobes: np.ndarray  # int8 HxW: 0..4 = LOBES, -1 = not lung
    info: dict[str, Any]  # level, finding, lung boxes, window, ...


def render_ct_slice(rng: np.random.Generator, patient: CTPatient | None = None, *, level: float = 0.6,
                    finding: str = "covid", size: int = 256, window: str | None = None) -> CTSlice:
    """Draw one axial chest-CT slice at ``level`` (0 apex .. 1 diaphragm).

    Without ``patient``, a new one with ``finding`` is drawn from ``rng`` first (so the slice may
    miss a finding that lies at other levels; pass the same ``patient`` to get correlated
    slices). ``window`` overrides the patient's: "lung" or "mediastinal".
    """
    if patient is None:
        patient = sample_ct_patient(rng, finding, size=size)
    p = patient
    if window is not None:
        if window not in ("lung", "mediastinal"):
            raise ValueError(f"window must be 'lung' or 'mediastinal', got {window!r}")
        p = replace(p, window=_lung_window(rng) if window == "lung" else (-160.0, 400.0))
    level = float(level)
    cv = _canvas(p)
    h, w, xi, y = cv.h, cv.w, cv.xi, cv.y
    sin_phi, rn, inner, body = cv.sin_phi, cv.rn, cv.inner, cv.body
    px = p.ay / 100.0  # pixels per 0.01 body unit, for pixel-sized details
    hu = cv.hu.copy()  # body, fat, muscle, cavity, mediastinal fat, spine
    # ribs and sternum: bony ovals in the chest wall
    bone = np.zeros((h, w), bool)
    n_ribs = int(rng.integers(9, 14))
    for ang in np.linspace(0, 2 * np.pi, n_ribs, endpoint=False) + rng.uniform(0, 2 * np.pi / n_ribs):
        if math.sin(ang) < -0.97 or math.sin(ang) > 0.94:
            continue  # sternum / spine positions
        rx, ry = _wall_point(p, float(ang), -0.02)
        rib = cv.ellipse(rx, ry, rng.uniform(0.05, 0.09), rng.uniform(0.025, 0.035), float(ang) + np.pi / 2)
        cv.fill(bone, rib)
    cv.fill(bone, cv.ellipse(*_wall_point(p, -np.pi / 2, -0.03), 0.09, 0.035))
    # heart from level ~0.35 (with epicardial fat), great vessels, airways
    grow = float(_smoothstep(0.33, 0.62, np.float32(level)))
    heart_size = grow * (1.0 - 0.35 * float(_smoothstep(0.9, 1.0, np.float32(level))))
    hx, hy, ha, hb, ht = p.heart
    solid = np.zeros((h, w), bool)  # soft-tissue structures that are never lung
    if heart_size > 0.05:
        cv.set(hu, cv.ellipse(hx, hy, ha * heart_size + 0.03, hb * heart_size + 0.03, ht), -80.0)
        heart = cv.ellipse(hx, hy, ha * heart_size, hb * heart_size, ht)
        cv.set(hu, heart, 40.0)
        cv.fill(solid, cv.ellipse(hx, hy, ha * heart_size + 0.035, hb * heart_size + 0.035, ht))
    for x0, y0, r, lo_l, hi_l in ((0.04, -0.18, 0.11, 0.42, 0.62),  # ascending aorta
                                  (0.16, -0.3, 0.09, 0.44, 0.56),  # pulmonary trunk
                                  (-0.13, -0.22, 0.065, 0.0, 0.5),  # superior vena cava
                                  (0.08, -0.05, 0.3, 0.3, 0.42)):  # aortic arch (cut obliquely)
        if lo_l <= level < hi_l:
            arch = r > 0.2  # an elongated, oblique section
            shape = cv.ellipse(x0, y0, r * 0.9 if arch else r, 0.09 if arch else r, 0.9 if arch else 0.0)
            cv.set(hu, shape, 45.0)
            cv.fill(solid, shape)
    airway = np.zeros((h, w), bool)
    if level < 0.38:
        cv.set(hu, cv.disc(0.0, -0.08, 0.1), 40.0)
        cv.fill(airway, cv.disc(0.0, -0.08, 0.08))
        cv.fill(solid, cv.disc(0.0, -0.08, 0.1))
    elif level < 0.5:
        for sx in (-0.15, 0.15):
            cv.fill(airway, cv.disc(sx, 0.0, 0.05))
    # lungs: cavity minus mediastinum, heart, vessels, spine; apex envelope; liver / stomach at the base
    lung_space = cv.lung_base & ~solid & ~bone
    env_s = 0.45 + 0.55 * float(_smoothstep(0.0, 0.4, np.float32(level)))
    if env_s < 0.999:
        half = 0.6 * p.aspect / 1.4
        lung_space &= ((np.abs(xi) - half) / (0.8 * env_s * p.aspect / 1.4)) ** 2 + (
            (y - 0.05 - 0.2 * (1 - env_s)) / (1.05 * env_s)) ** 2 < 1
    lung_r = lung_space & (xi < -0.02)
    lung_l = lung_space & (xi > 0.02)
    if level > 0.78:
        liver = cv.disc(-0.45, 0.35, 1.1 * float(_smoothstep(0.78, 1.05, np.float32(level))))
        sl_, m = liver
        m = m & lung_r[sl_]
        hu[sl_][m] = 50.0
        lung_r[sl_] &= ~m
    if level > 0.85:
        stomach = cv.disc(0.5, 0.35, 0.9 * float(_smoothstep(0.85, 1.1, np.float32(level))))
        sl_, m = stomach
        m = m & lung_l[sl_]
        hu[sl_][m] = 35.0
        lung_l[sl_] &= ~m
    lung = lung_r | lung_l
    lobes = lobe_map(lung_r, lung_l, level, p.fissure)
    # parenchyma: dependent (posterior) gradient and fine texture
    emphysema = any(les.kind == "holes" for les in p.lesions)
    shape_noise = _smooth_noise(rng, (h, w), 5 * px)
    par = (p.lung_hu - (30.0 if emphysema else 0.0) + 70.0 * np.clip((y + 0.7) / 1.5, 0, 1) ** 2
           + 12.0 * shape_noise)
    hu = np.where(lung, par, hu)
    hu[airway] = -1000.0
    # findings
    lesion_o = np.zeros((h, w), np.float32)  # opacity of the drawn abnormality, 0..1
    add = np.zeros((h, w), np.float32)  # HU added (ground glass)
    crazy = np.zeros((h, w), np.float32)
    dense = np.zeros((h, w), np.float32)  # weight towards dense_hu (consolidation, nodules, fluid)
    dense_hu = 30.0
    for les in p.lesions:
        s2 = 1.0 - ((level - les.z) / les.zext) ** 2
        if s2 <= 0.02:
            continue
        s = math.sqrt(s2)
        if les.kind in ("ggo", "crazy", "consolidation", "nodule", "bulla"):
            a, b = les.a * s, les.b * s
            sl, d2 = cv.dist2(les.x, les.y, a, b, les.theta, 1.6)
            if sl is None:
                continue
            if les.kind == "nodule":
                o = _smoothstep(0.0, 0.15, 1.0 - d2 + 0.05 * shape_noise[sl])
                dense[sl] = np.maximum(dense[sl], o)
                dense_hu = les.strength
                if les.amount > 0:  # ground-glass halo
                    halo = _smoothstep(0.0, 0.6, 1.0 - d2 / 3.0 + 0.2 * shape_noise[sl])
                    add[sl] = np.maximum(add[sl], halo * 180.0)
                    o = np.maximum(o, halo)
            elif les.kind == "bulla":
                o = _smoothstep(0.0, 0.1, 1.0 - d2)
                hu[sl] = np.where(lung[sl], hu[sl] - o * (hu[sl] + 990.0), hu[sl])
                wall = np.clip(_smoothstep(0.0, 0.05, 1.0 - d2 * 0.85) - o, 0, 1)
                add[sl] = np.maximum(add[sl], wall * 250.0)
            else:
                val = 1.0 - d2 + 0.45 * shape_noise[sl]
                o = _smoothstep(0.0, 0.55, val)
                add[sl] = np.maximum(add[sl], o * les.strength)
                if les.kind == "crazy":
                    crazy[sl] = np.maximum(crazy[sl], o)
                if les.kind == "consolidation":
                    dense[sl] = np.maximum(dense[sl], _smoothstep(0.55, 0.85, val))
                    dense_hu = les.amount
            lesion_o[sl] = np.maximum(lesion_o[sl], o)
        elif les.kind == "lobar":
            cover = _smoothstep(-0.3, 0.2, _smooth_noise(rng, (h, w), 14 * px) + 2.0 * (les.amount - 0.5)
                                + 1.5 * (s - 0.5))
            o = _blur((lobes == les.lobe) * cover, 0.8 * px)
            dense = np.maximum(dense, o)
            dense_hu = les.strength
            lesion_o = np.maximum(lesion_o, o)
        elif les.kind == "holes":
            idx = np.flatnonzero(lung)
            if idx.size:
                wgt = np.where(np.isin(lobes.ravel()[idx], (0, 3)), 3.0, 1.0)
                n = int(les.amount * idx.size / (60.0 * px * px))
                pick = rng.choice(idx, size=min(n, idx.size), p=wgt / wgt.sum())
                sigma = 1.3 * px
                holes = _splat((h, w), pick // w, pick % w, np.full(pick.size, 2 * np.pi * sigma**2))
                holes = _blur(holes, sigma)
                o = np.clip(holes * 1.4, 0, 1) * lung
                hu = hu - o * (hu + 990.0)
                lesion_o = np.maximum(lesion_o, o)
        elif les.kind in ("band", "effusion"):
            # dependent crescent along the posterior chest wall, thickest where it is lowest
            side_mask = lung_r if les.side < 0 else lung_l
            depth = les.amount * s * np.clip(sin_phi, 0, 1) ** 2
            o = _smoothstep(-0.015, 0.015, rn - (inner - 0.015 - depth) + 0.012 * shape_noise)
            o = o * (sin_phi > 0.1) * side_mask
            if les.kind == "effusion":
                dense = np.maximum(dense, o)
                dense_hu = les.strength
            else:
                add = np.maximum(add, o * (les.strength - p.lung_hu))
            lesion_o = np.maximum(lesion_o, o)
    lesion_o *= lung
    if crazy.any():
        lines = np.abs(_smooth_noise(rng, (h, w), 3.5 * px)) < 0.25
        add = add + crazy * lines * 140.0
    hu = hu + add * lung
    # vessels on top of the ground glass (as in real GGO), bronchi for air bronchograms
    vessel, bronchi = _vessels(rng, p, cv, lung, px, bronchi=any(les.kind == "lobar" for les in p.lesions))
    if emphysema:
        vessel *= 0.6
    hu = hu + vessel * (55.0 - hu)
    dense *= lung
    hu = hu + dense * (dense_hu - hu)
    if bronchi is not None:
        bron = bronchi * _smoothstep(0.5, 0.9, dense)
        hu = hu - bron * (hu + 900.0)
    hu[bone] = 650.0
    # acquisition: blur, correlated noise, window; outside the body stays exactly black
    sigma = max(0.3, p.blur * p.height / 256.0)  # white noise blurred by sigma has std 1 / (2 sigma sqrt(pi))
    white = rng.standard_normal((h, w), dtype=np.float32)
    hu = _blur(hu + (p.noise_hu * 2 * sigma * math.sqrt(math.pi)) * white, sigma)
    lo, width = p.window
    image = np.clip((hu - lo) * (255.0 / width), 0, 255)
    image[~body] = 0.0
    image = np.rint(image).astype(np.uint8)
    lesion = (lesion_o > 0.3) & lung
    info = {
        "level": level, "finding": p.finding, "window": [float(lo), float(width)],
        "lung_box": _bbox(lung), "right_lung_box": _bbox(lung_r), "left_lung_box": _bbox(lung_l),
        "body_box": _bbox(body), "lesion_fraction": float(lesion.sum() / max(1, lung.sum())),
    }
    return CTSlice(image, lesion, lobes, info)


class _Canvas:
    """Body-unit coordinates and level-independent anatomy of a patient's canvas.

    Shapes are computed inside their bounding windows only (fast); see :func:`_canvas`.
    """

    def __init__(self, p: CTPatient):
        self.p, self.h, self.w = p, p.height, p.width
        self.ca, self.sa = math.cos(p.angle), math.sin(p.angle)
        dx = (np.arange(self.w, dtype=np.float32) + 0.5 - p.cx)[None, :]
        dy = (np.arange(self.h, dtype=np.float32) + 0.5 - p.cy)[:, None]
        xi = self.xi = (dx * self.ca + dy * self.sa) / p.ay  # HxW body units, x to the image right
        y = self.y = (-dx * self.sa + dy * self.ca) / p.ay  # HxW body units, y to the back
        # body: fat, muscle (thicker in front: pectorals), chest cavity
        phi = np.arctan2(y, xi / p.aspect)
        self.sin_phi = np.sin(phi)
        outline = 1.0 + sum(float(a) * np.cos(k * phi + ph) for k, a, ph in p.harmonics)
        self.rn = np.sqrt((xi / p.aspect) ** 2 + y**2) / outline
        self.body = (self.rn < 1.0) & (y < p.back)
        self.inner = 1.0 - p.fat - p.muscle * (1 + 0.8 * np.clip(-self.sin_phi, 0, 1))
        self.cavity = self.body & (self.rn < self.inner)
        hu = np.where(self.body, np.where(self.rn < 1.0 - p.fat, 45.0, -100.0), -1000.0).astype(np.float32)
        hu[self.cavity] = 40.0
        # mediastinum: narrow in front (anterior junction line), fat around the vessels
        med_w = 0.05 + (p.mediastinum - 0.05) * _smoothstep(-0.8, -0.3, y)
        med = self.cavity & (np.abs(xi - 0.03) < med_w) & (y < 0.5)
        hu[med] = -60.0
        # spine: vertebral body with cortex, canal, posterior elements; descending aorta
        self.set(hu, self.disc(0.0, 0.6, 0.15), 700.0)
        self.set(hu, self.disc(0.0, 0.6, 0.125), 300.0)
        for shape in (self.ellipse(0.0, 0.88, 0.05, 0.09), self.ellipse(-0.17, 0.74, 0.08, 0.035),
                      self.ellipse(0.17, 0.74, 0.08, 0.035)):
            self.set(hu, shape, 600.0)
        self.set(hu, self.disc(0.0, 0.8, 0.065), 20.0)
        aorta = np.zeros((self.h, self.w), bool)
        self.fill(aorta, self.disc(0.2, 0.4, 0.1))
        hu[aorta] = 45.0
        self.hu = hu
        paraspinal = ((xi**2 + (y - 0.62) ** 2) < 0.27**2) | ((np.abs(xi) < 0.22) & (y > 0.45))
        self.lung_base = self.cavity & (self.rn < self.inner - 0.015) & ~med & ~paraspinal & ~aorta

    def to_px(self, bx: float | np.ndarray, by: float | np.ndarray) -> tuple:
        p = self.p
        return p.cx + p.ay * (bx * self.ca - by * self.sa), p.cy + p.ay * (bx * self.sa + by * self.ca)

    def window(self, x0: float, y0: float, r: float) -> tuple[slice, slice] | None:
        cx, cy = self.to_px(x0, y0)
        rp = r * self.p.ay + 2
        ys, ye = max(0, int(cy - rp)), min(self.h, int(cy + rp) + 1)
        xs, xe = max(0, int(cx - rp)), min(self.w, int(cx + rp) + 1)
        return (slice(ys, ye), slice(xs, xe)) if ys < ye and xs < xe else None

    def dist2(self, x0: float, y0: float, a: float, b: float, t: float = 0.0, margin: float = 1.0):
        """(window, squared elliptic distance inside it) of an ellipse; (None, None) off-canvas."""
        sl = self.window(x0, y0, max(a, b) * margin + 0.02)
        if sl is None:
            return None, None
        ct, st = math.cos(t), math.sin(t)
        dx, dy = self.xi[sl] - x0, self.y[sl] - y0
        u, v = dx * ct + dy * st, -dx * st + dy * ct
        return sl, (u / a) ** 2 + (v / b) ** 2

    def ellipse(self, x0: float, y0: float, a: float, b: float, t: float = 0.0):
        sl, d2 = self.dist2(x0, y0, a, b, t)
        return (sl, None) if sl is None else (sl, d2 < 1.0)

    def disc(self, x0: float, y0: float, r: float):
        return self.ellipse(x0, y0, r, r)

    @staticmethod
    def fill(target: np.ndarray, shape: tuple) -> None:
        sl, m = shape
        if sl is not None:
            target[sl] |= m

    @staticmethod
    def set(target: np.ndarray, shape: tuple, value: float) -> None:
        sl, m = shape
        if sl is not None:
            target[sl][m] = value


_CANVASES: dict[tuple, _Canvas] = {}


def _canvas(p: CTPatient) -> _Canvas:
    """The patient's canvas, cached by its geometry (slices of one patient share it; no randomness)."""
    key = (p.height, p.width, p.cx, p.cy, p.ay, p.aspect, p.angle, p.back, p.fat, p.muscle, p.mediastinum,
           p.harmonics.tobytes())
    if key not in _CANVASES:
        if len(_CANVASES) >= 4:
            _CANVASES.pop(next(iter(_CANVASES)))
        _CANVASES[key] = _Canvas(p)
    return _CANVASES[key]


def _vessels(rng: np.random.Generator, p: CTPatient, cv: _Canvas, lung: np.ndarray, px: float,
             bronchi: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Vessel opacity (0..1, lungs only) from the patient's branch trees, plus bronchi if asked."""
    h, w = cv.h, cv.w
    side, ang, length, x0, y0, gen = (c[:, None] for c in p.branches.T.astype(np.float64))
    nb = len(p.branches)
    ang = ang + rng.normal(0, 0.1, (nb, 1))
    length = length * rng.uniform(0.85, 1.1, (nb, 1))
    npts = int(length.max() * p.ay * 2) + 2  # ~2 points per pixel on the longest branch
    t = np.linspace(0, 1, npts)[None, :]
    wig = rng.normal(0, 0.01, (nb, npts)).cumsum(1) * np.sqrt(length / length.max())
    bx = x0 + t * length * np.cos(ang) + wig * np.sin(ang)
    by = y0 + t * length * np.sin(ang) * 0.85 - wig * np.cos(ang)
    pxs, pys = cv.to_px(bx, by)
    # amplitude tapers along the branch; weights keep 2 points/px whatever the branch length
    amp = (0.75 - 0.55 * t) * np.where(gen > 0, 0.7, 1.0) * (length * p.ay * 2 / npts)
    trunk = (t < 0.3) & (gen == 0)
    thin, thick = 0.55 * px, 1.0 * px
    lines = _splat((h, w), pys[~trunk], pxs[~trunk], amp[~trunk])
    trunks = _splat((h, w), pys[trunk], pxs[trunk], amp[trunk])
    idx = np.flatnonzero(lung)
    if idx.size:  # vessels seen in cross-section
        pick = rng.choice(idx, size=min(idx.size, int(rng.integers(50, 110) * h * w / 65536)))
        lines += _splat((h, w), pick // w, pick % w, rng.uniform(0.25, 0.8, pick.size) * (2 * np.pi * thin**2)
                        / (1.25 * thin))
    # a line of 2 points/px blurred by sigma peaks at 2 / (sqrt(2 pi) sigma) ~ 1 / (1.25 sigma)
    vessel = _blur(lines * (1.25 * thin), thin) + _blur(trunks * (1.25 * thick), thick)
    vessel = np.clip(vessel, 0, 1) * lung
    bron = np.clip(_blur(lines, 0.4 * px) * (0.5 * px), 0, 1) if bronchi else None
    return vessel, bron


def _slice_levels(rng: np.random.Generator, p: CTPatient, n: int) -> list[float]:
    """Levels for ``n`` correlated slices of one patient: near the findings, in 2-4 mm-like steps."""
    visible = [les for les in p.lesions if les.kind not in ("holes",)]
    if visible:
        les = visible[int(rng.integers(len(visible)))]
        centre = les.z + rng.uniform(-0.4, 0.4) * min(les.zext, 0.5)
    else:
        centre = 0.3 + 0.65 * rng.beta(1.8, 1.4)
    step = rng.uniform(0.01, 0.03)
    levels = centre + step * (np.arange(n) - (n - 1) / 2)
    return [float(v) for v in np.clip(levels, 0.12, 0.97)]


def _ensure_lesion(rng: np.random.Generator, p: CTPatient, level: float, min_px: int) -> CTSlice:
    """Render a COVID slice that shows at least ``min_px`` lesion pixels (moving towards a lesion)."""
    for _ in range(8):
        sl = render_ct_slice(rng, p, level=level)
        if sl.lesion.sum() >= min_px:
            return sl
        les = p.lesions[int(rng.integers(len(p.lesions)))]
        level = float(np.clip(les.z + rng.uniform(-0.3, 0.3) * les.zext, 0.12, 0.97))
    # fallback: an extra subpleural lesion at this level in the posterior lung
    extra = replace(p, lesions=p.lesions + [
        Lesion("ggo", -1, *_wall_point(p, np.pi / 2 + 0.9, 0.06), z=level, zext=0.2, a=0.32, b=0.2,
               theta=np.pi / 2 + 0.9 + np.pi / 2, strength=float(rng.uniform(380, 600)))])
    return render_ct_slice(rng, extra, level=level)


# --------------------------------------------------------------------------------------------
# chest X-ray
# --------------------------------------------------------------------------------------------

class CXRImage(NamedTuple):
    """One rendered frontal chest X-ray."""

    image: np.ndarray  # uint8 HxW
    lesion: np.ndarray  # bool HxW: the drawn opacity
    info: dict[str, Any]


def render_cxr(rng: np.random.Generator, *, label: str = "normal", size: int = 256) -> CXRImage:
    """Draw a frontal (PA) chest X-ray with ``label`` in :data:`CXR_LABELS` (bright = dense)."""
    if label not in CXR_LABELS:
        raise ValueError(f"unknown X-ray label {label!r}; choose one of {', '.join(CXR_LABELS)}")
    out_h = size
    out_w = int(round(size * rng.uniform(0.9, 1.15)))
    # drawn on a half-resolution grid (X-ray anatomy is smooth), upsampled, then noise at full size
    h, w = (out_h + 1) // 2, (out_w + 1) // 2
    s = h / 2.0  # half the image height: the length unit
    cx, cy = w / 2 + rng.uniform(-0.04, 0.04) * w, h / 2 + rng.uniform(-0.04, 0.04) * h
    xs = ((np.arange(w, dtype=np.float32) + 0.5 - cx) / s)[None, :]
    ys = ((np.arange(h, dtype=np.float32) + 0.5 - cy) / s)[:, None]
    tilt = rng.uniform(-0.05, 0.05)
    x = xs + tilt * ys
    y = ys - tilt * xs
    tw = rng.uniform(0.78, 0.92)
    shoulder = rng.uniform(-0.8, -0.65)
    half = 0.24 + (tw - 0.24) * _smoothstep(shoulder - 0.15, shoulder + 0.05, y)
    torso = np.abs(x) < half
    d = np.where(torso, 0.42 + 0.12 * (1 - np.clip((x / tw) ** 2, 0, 1)), 0.0).astype(np.float32)
    lx, lw = rng.uniform(0.33, 0.4), rng.uniform(0.22, 0.28)
    top = shoulder + rng.uniform(0.0, 0.08)
    dome = {-1: rng.uniform(0.3, 0.48), 1: 0.0}
    dome[1] = dome[-1] + rng.uniform(0.02, 0.08)
    lungs = {}
    for side in (-1, 1):
        ux = (x - side * lx) / lw
        below_top = y > top + 0.25 * ux**2 + 0.05 * np.clip(-side * ux, 0, None) ** 2
        above_dome = y < dome[side] - 0.12 * np.clip(1 - ux**2, 0, 1) + 0.1 * np.clip(side * ux, 0, None) ** 2
        lungs[side] = (np.abs(ux) < 1.0) & below_top & above_dome & (side * x > 0.1)
    hxc, hyc = rng.uniform(0.05, 0.12), dome[1] - rng.uniform(0.12, 0.2)
    ha, hb = rng.uniform(0.25, 0.34), rng.uniform(0.2, 0.26)
    heart = ((x - hxc) / ha) ** 2 + ((y - hyc) / hb) ** 2 < 1
    lung = (lungs[-1] | lungs[1]) & ~heart
    zone = np.clip((y - top) / (dome[-1] - top), 0, 1)
    d = np.where(lung, 0.16 + 0.1 * zone + 0.04 * (1 - np.clip(np.abs(np.abs(x) - lx) / lw, 0, 1)), d)
    d = np.where(heart & torso, np.maximum(d, 0.72), d)
    med = (np.abs(x) < 0.11) & (y > top - 0.1) & torso
    d = np.where(med, np.maximum(d, 0.68), d)
    d = d + 0.06 * ((np.abs(x) < 0.055) & torso)
    # below the diaphragm domes: abdomen
    side_x = np.where(x < 0, -1, 1)
    ux_all = (x - side_x * lx) / lw
    dome_y = np.where(x < 0, dome[-1], dome[1]) - 0.12 * np.clip(1 - ux_all**2, 0, 1)
    abdomen = torso & (y > dome_y) & ~heart
    d = np.where(abdomen & ~med, np.maximum(d, 0.62), d)
    # posterior ribs (periodic bands curving down laterally), anterior ribs, clavicles
    spacing = (dome[-1] - top) / 7.0
    ax = np.abs(x)
    chest = torso & (y < dome_y + 0.15) & (ax > 0.06)
    q = y + 0.15 * ax - 0.55 * ax**2 - (top + 0.02)
    def bands(q: np.ndarray, n: int, half_width: float) -> np.ndarray:  # n periodic bands from q = 0
        stripe = np.abs((q + spacing / 2) % spacing - spacing / 2) < half_width
        return (q > -half_width) & (q < n * spacing) & stripe

    ribs = (bands(q, 9, 0.022) & (ax < half * 0.97)).astype(np.float32)
    qa = y - 0.25 * ax + 0.35 * ax**2 - (top + 0.17)
    ribs += 0.4 * (bands(qa, 7, 0.018) & (ax > 0.12) & (ax < half * 0.9))
    ribs *= chest
    for side in (-1, 1):
        t = np.clip((side * x - 0.08) / 0.5, 0, 1)
        ribs += 1.5 * ((np.abs(y - (top - 0.02 - 0.1 * t)) < 0.028) & (side * x > 0.08) & (side * x < 0.58))
    d = d + 0.09 * ribs * torso
    # vascular markings
    pts_y, pts_x, pts_w = [], [], []
    for side in (-1, 1):
        hxp, hyp = side * 0.16, rng.uniform(-0.15, -0.02)
        for _ in range(int(rng.integers(8, 13))):
            ang = (np.pi if side < 0 else 0.0) + side * rng.uniform(-1.3, 1.1)
            ln = rng.uniform(0.15, 0.35)
            t = np.linspace(0, 1, 40)
            pts_x.append(cx + s * (hxp + t * ln * np.cos(ang)))
            pts_y.append(cy + s * (hyp + t * ln * np.sin(ang)))
            pts_w.append(1.0 - 0.8 * t)
    marks = _splat((h, w), np.concatenate(pts_y), np.concatenate(pts_x), np.concatenate(pts_w))
    marks = _blur(marks, 0.9 * s / 128)
    d = d + np.clip(marks * 1.2, 0, 0.12) * lung
    # disease
    opac = np.zeros_like(d)
    noise = _smooth_noise(rng, (h, w), 6 * s / 128)
    blobs: list[tuple[int, float, float, float, float, float]] = []  # side, x, y, r, strength, sharpness
    if label == "COVID-19":
        sides = [-1, 1] if rng.random() < 0.85 else [int(rng.choice([-1, 1]))]
        for side in sides:
            for _ in range(int(rng.integers(1, 4))):
                bx = side * (lx + lw * rng.uniform(0.35, 0.85))
                by = top + (dome[side] - top) * rng.uniform(0.55, 0.95)
                blobs.append((side, bx, by, rng.uniform(0.08, 0.17), rng.uniform(0.07, 0.18), 0.8))
    elif label == "pneumonia":
        if rng.random() < 0.75:
            side = int(rng.choice([-1, 1]))
            bx = side * (lx + lw * rng.uniform(-0.5, 0.6))
            by = top + (dome[side] - top) * rng.uniform(0.25, 0.9)
            blobs.append((side, bx, by, rng.uniform(0.12, 0.24), rng.uniform(0.2, 0.38), 0.25))
        else:
            for side in (-1, 1):
                blobs.append((side, side * (0.16 + rng.uniform(0.05, 0.12)), rng.uniform(-0.1, 0.1),
                              rng.uniform(0.14, 0.22), rng.uniform(0.08, 0.16), 0.9))
    for _side, bx, by, r, strength, sharp in blobs:
        val = 1 - ((x - bx) ** 2 + (y - by) ** 2) / (r * r) + 0.35 * noise
        opac = np.maximum(opac, strength * _smoothstep(0.0, 0.2 + sharp, val))
    opac *= lung
    d = d + opac
    lesion = (opac > 0.3 * max(float(opac.max()), 1e-6)) & (opac > 0.02)
    # acquisition: blur, upsampling, quantum noise, exposure curve
    d = _blur(d, rng.uniform(0.6, 1.2) * s / 128)
    d = np.asarray(Image.fromarray(d.astype(np.float32)).resize((out_w, out_h), Image.Resampling.BILINEAR))
    d = d + rng.uniform(0.01, 0.025) * rng.standard_normal((out_h, out_w), dtype=np.float32)
    lo, hi, gamma = rng.uniform(0.0, 0.08), rng.uniform(0.75, 0.95), rng.uniform(0.8, 1.25)
    image = np.rint(np.clip((d - lo) / (hi - lo), 0, 1) ** gamma * 255).astype(np.uint8)
    lesion = np.asarray(Image.fromarray(lesion).resize((out_w, out_h), Image.Resampling.NEAREST))
    lung_big = np.asarray(Image.fromarray(lung).resize((out_w, out_h), Image.Resampling.NEAREST))
    return CXRImage(image, lesion, {"label": label, "lung_box": _bbox(lung_big)})


# --------------------------------------------------------------------------------------------
# natural-image stand-in: IFS fractals
# --------------------------------------------------------------------------------------------

def _chaos_game(rng: np.random.Generator, maps: np.ndarray, probs: np.ndarray, n: int, iters: int,
                keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (m) of points of the IFS attractor and the index of the map that produced each."""
    x, y = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    cum = np.cumsum(probs)
    cum[-1] = 1.0
    xs, ys, ks = [], [], []
    for it in range(iters):
        k = np.searchsorted(cum, rng.random(n), side="right")
        a, b, c, d, e, f = maps[k].T
        x, y = a * x + b * y + e, c * x + d * y + f
        if it >= iters - keep:
            xs.append(x)
            ys.append(y)
            ks.append(k)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)


def _contract(maps: np.ndarray, limit: float = 0.92) -> np.ndarray:
    maps = maps.copy()
    for m in maps:
        a = m[:4].reshape(2, 2)
        top = np.linalg.svd(a, compute_uv=False)[0]
        if top > limit:
            m[:4] *= limit / top
    return maps


def ifs_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random contractive affine IFS that fills its bounding box reasonably (a fractal class).

    Returns (maps k x 6 = a, b, c, d, e, f of x' = a x + b y + e, y' = c x + d y + f; probs k).
    """
    for _ in range(500):
        k = int(rng.integers(2, 5))
        maps = _contract(rng.uniform(-1, 1, (k, 6)), 0.9)
        det = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
        if det.min() < 0.02:
            continue
        probs = det / det.sum()
        x, y, _ = _chaos_game(rng, maps, probs, 2000, 20, 4)
        pts = np.stack([x, y], 1)
        lo, hi = np.percentile(pts, 1, 0), np.percentile(pts, 99, 0)
        ext = hi - lo
        if ext.min() < 0.15 * ext.max() or not np.isfinite(ext).all():
            continue
        g = ((pts - lo) / np.maximum(ext, 1e-9) * 31.999).astype(int)
        ok = (g >= 0).all(1) & (g < 32).all(1)
        fill = len(np.unique(g[ok, 0] * 32 + g[ok, 1])) / 1024
        if 0.12 < fill < 0.7:
            return maps, probs
    raise RuntimeError("could not draw a non-degenerate IFS in 500 tries")


def render_fractal(rng: np.random.Generator, maps: np.ndarray, probs: np.ndarray, *, size: int = 64,
                   grey: bool = False) -> np.ndarray:
    """One image (uint8 size x size x 3) of the IFS class (maps, probs): jittered, coloured, placed."""
    return render_fractals(rng, maps, probs, 1, size=size, grey=np.array([grey]))[0]


def render_fractals(rng: np.random.Generator, maps: np.ndarray, probs: np.ndarray, n: int, *, size: int = 64,
                    grey: np.ndarray | None = None) -> np.ndarray:
    """``n`` images (uint8 n x size x size x 3) of one IFS class, drawn together (vectorised)."""
    k_maps = len(maps)
    # a few jittered variants of the system (chaos game each), then one variant per image
    n_var = min(n, 6)
    clouds = [_chaos_game(rng, _contract(maps + rng.normal(0, 0.03, maps.shape), 0.95), probs, 1000, 16, 5)
              for _ in range(n_var)]
    pick = rng.integers(0, n_var, n)
    x = np.stack([clouds[i][0] for i in pick]).astype(np.float32)  # n x m
    y = np.stack([clouds[i][1] for i in pick]).astype(np.float32)
    k = np.stack([clouds[i][2] for i in pick])
    rows = np.arange(n)[:, None]
    x = x + rng.uniform(-0.15, 0.15, (n, 1)).astype(np.float32) * y  # shear
    lo_x, hi_x = np.percentile(x[:, -500:], [0.5, 99.5], axis=1)
    lo_y, hi_y = np.percentile(y[:, -500:], [0.5, 99.5], axis=1)
    norm = np.maximum(np.maximum(hi_x - lo_x, hi_y - lo_y), 1e-9)
    ang = rng.uniform(0, 2 * np.pi, n)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    scale = rng.uniform(0.55, 0.95, n) * size / norm
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, (2, n)) * size
    # similarity transform (rotation, flip, scale, shift) of the centred cloud, as one affine map
    a11, a12 = (scale * np.cos(ang) * flip)[:, None], (-scale * np.sin(ang))[:, None]
    a21, a22 = (scale * np.sin(ang) * flip)[:, None], (scale * np.cos(ang))[:, None]
    x = x - ((lo_x + hi_x) / 2)[:, None].astype(np.float32)
    y = y - ((lo_y + hi_y) / 2)[:, None].astype(np.float32)
    col = (a11 * x + a12 * y + cx[:, None] + 0.5).astype(np.int32)
    row = (a21 * x + a22 * y + cy[:, None] + 0.5).astype(np.int32)
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    flat = (rows * (size * size) + row * size + col)[ok]
    palette = rng.uniform(0, 1, (n, k_maps, 3))
    palette = palette / palette.max(2, keepdims=True)
    weights = palette[np.broadcast_to(rows, k.shape)[ok], k[ok]]  # colour of the producing map
    bins = n * size * size
    count = np.bincount(flat, minlength=bins).reshape(n, size, size, 1).astype(np.float32)
    dens = np.stack([np.bincount(flat, weights=weights[:, c], minlength=bins) for c in range(3)], -1)
    colour = dens.reshape(n, size, size, 3).astype(np.float32) / np.maximum(count, 1e-6)
    alpha = 1 - np.exp(-count / rng.uniform(0.5, 1.5, (n, 1, 1, 1)).astype(np.float32))
    colour = np.clip(colour * rng.uniform(0.6, 1.0, (n, 1, 1, 1)).astype(np.float32)
                     + rng.uniform(0, 0.3, (n, 1, 1, 3)).astype(np.float32), 0, 1)
    bg = (rng.uniform(0, 1, (n, 1, 1, 3)) * rng.uniform(0.2, 0.8, (n, 1, 1, 1))).astype(np.float32)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    grad = (rng.uniform(-0.2, 0.2, (n, 1, 1, 1)).astype(np.float32) * g[None, None, :, None]
            + rng.uniform(-0.2, 0.2, (n, 1, 1, 1)).astype(np.float32) * g[None, :, None, None])
    tex = 0.08 * np.stack([_smooth_noise(rng, (size, size), rng.uniform(4, 16)) for _ in range(n)])[..., None]
    img = np.clip(bg + grad + tex, 0, 1) * (1 - alpha) + colour * alpha
    img += 0.015 * rng.standard_normal((n, size, size, 1), dtype=np.float32)
    if grey is not None and grey.any():
        img[grey] = img[grey].mean(-1, keepdims=True)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# writing files
# --------------------------------------------------------------------------------------------

def _encode(image: np.ndarray, fmt: str, mode: str = "L", quality: int = 92) -> bytes:
    """Bytes of ``image`` (uint8 HxW or HxWx3) as PNG or JPEG in ``mode`` with fixed options."""
    im = Image.fromarray(image)
    if im.mode != mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    if fmt == "PNG":
        im.save(buf, "PNG", compress_level=1)
    else:
        options = {} if mode == "L" else {"subsampling": 0}
        im.save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(_encode(image, "JPEG", "L", quality))))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _job(job: dict[str, Any]) -> dict[str, Any]:
    """Render and write one image (run in a worker); returns its index row."""
    kind, root = job["kind"], Path(job["root"])
    rng = _rng(*job["key"])
    row = {k: job.get(k, "") for k in ("part", "file", "split", "label", "patient", "finding")}
    if kind == "ct":
        p: CTPatient = job["ct_patient"]
        if job.get("ensure_lesion"):
            sl = _ensure_lesion(rng, p, job["level"], max(4, int(p.height * p.width * 1e-2)))
        else:
            sl = render_ct_slice(rng, p, level=job["level"])
        image, mask = sl.image, sl.lesion
        if job.get("roundtrip"):
            image = _jpeg_roundtrip(image, p.jpeg_quality)
        k = job.get("rot", 0)
        box = sl.info["lung_box"]
        if k:
            image, mask = np.rot90(image, k).copy(), np.rot90(mask, k).copy()
            box = _bbox(np.rot90(sl.lobes >= 0, k))
        _write(root / job["file"], _encode(image, job["fmt"], job["mode"], job.get("quality", 92)))
        if job.get("mask_file"):
            _write(root / job["mask_file"], _encode(mask.astype(np.uint8) * 255, "PNG", "L"))
        row.update(level=round(sl.info["level"], 4), height=image.shape[0], width=image.shape[1],
                   lesion_fraction=round(sl.info["lesion_fraction"], 5),
                   lung_box=" ".join(map(str, box)) if box else "")
    elif kind == "cxr":
        cxr = render_cxr(rng, label=job["label"], size=job["size"])
        _write(root / job["file"], _encode(cxr.image, job["fmt"], job["mode"], job.get("quality", 92)))
        box = cxr.info["lung_box"]
        row.update(level="", height=cxr.image.shape[0], width=cxr.image.shape[1],
                   lesion_fraction=round(float(cxr.lesion.mean()), 5), lung_box=" ".join(map(str, box)))
    elif kind == "fractal":  # one job per class: all its train and val images
        maps, probs = ifs_system(_rng(*job["key"], 0))
        images = render_fractals(rng, maps, probs, len(job["files"]), size=job["size"], grey=job["grey"])
        for img, name, grey in zip(images, job["files"], job["grey"], strict=True):
            _write(root / name, _encode(img, "JPEG", "L" if grey else "RGB", 90))
        return {"natural_class": job["class"], "maps": len(maps)}
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return row


def _patient_counts(rng: np.random.Generator, total: int, mean_extra: float, cap: int) -> list[int]:
    """Slices per patient (1 + Poisson, capped) summing exactly to ``total``."""
    counts: list[int] = []
    while sum(counts) < total:
        counts.append(min(cap, 1 + int(rng.poisson(mean_extra))))
    counts[-1] -= sum(counts) - total
    return counts


_TITLE_WORDS = ("synthetic", "novel", "coronavirus", "pneumonia", "case", "series", "chest", "computed",
                "tomography", "findings", "ground", "glass", "opacities", "early", "stage", "patients",
                "clinical", "features", "imaging", "outcomes", "retrospective", "cohort", "analysis")


def _covid_captions(rng: np.random.Generator, p: CTPatient) -> str:
    kinds = {les.kind for les in p.lesions}
    sides = {les.side for les in p.lesions}
    text = "Bilateral" if len(sides) > 1 else "Unilateral"
    pattern = ("ground-glass opacities with crazy-paving pattern" if "crazy" in kinds else
               "ground-glass opacities and consolidation" if "consolidation" in kinds else
               "ground-glass opacities")
    day = int(rng.integers(2, 15))
    return (f"['Figure {int(rng.integers(1, 6))}. Chest CT of a synthetic patient on illness day {day}. "
            f"{text} peripheral {pattern}, predominantly in the lower lobes. ']")


def _plan_covid_ct(seed: int, cfg: SynthScale, root: str) -> tuple[list[dict], dict[str, Any]]:
    code = _PART_CODE["covid-ct"]
    rng = _rng(seed, code)
    jobs: list[dict] = []
    splits = ("train", "val", "test")
    covid_rows, lists, noncovid_meta, ids = [], {}, [], {}
    # COVID: patients per split, names like the paper-figure names of the real set
    pid = 0
    serial = int(rng.integers(10000, 20000))
    for si, split in enumerate(splits):
        names = []
        for count in _patient_counts(rng, cfg.covid[si], 0.8, 8):
            pid += 1
            p = sample_ct_patient(_rng(seed, code, 1, pid), "covid", size=cfg.ct_size,
                                  mediastinal_window=0.06)
            levels = _slice_levels(_rng(seed, code, 2, pid), p, count)
            serial += int(rng.integers(1, 400))
            if rng.random() < 0.1:
                words = rng.choice(_TITLE_WORDS, size=int(rng.integers(8, 14)))
                page = int(rng.integers(1, 12))
                stem = f"{'-'.join(words)}_2020_Synthetic-Journal-of-Imaging-p{page}-{serial % 97}"
            else:
                month, day = int(rng.integers(1, 5)), int(rng.integers(1, 29))
                stem = (f"synth-2020.{month:02d}.{day:02d}.2{serial:07d}"
                        f"-p{int(rng.integers(1, 30))}-{int(rng.integers(10, 200))}")
            no_ext = rng.random() < 0.24
            doi = f"10.5555/synth.{serial}" if rng.random() < 0.18 else ""
            caption = _covid_captions(rng, p)
            mode = str(rng.choice(["L", "RGB", "RGBA"], p=[0.4, 0.5, 0.1]))
            jpeg_inside = rng.random() < 0.1
            for k in range(count):
                name = f"{stem}%{k}.png" if count > 1 else f"{stem}.png"
                names.append(name)
                covid_rows.append((name[:-4] if no_ext else name, f"Patient {pid}", doi,
                                   "" if rng.random() < 0.04 else caption))
                jobs.append({"kind": "ct", "root": root, "key": (seed, code, 3, pid, k), "ct_patient": p,
                             "level": levels[k], "roundtrip": True, "ensure_lesion": True,
                             "fmt": "JPEG" if jpeg_inside else "PNG",
                             "mode": "RGB" if jpeg_inside and mode == "RGBA" else mode, "quality": 95,
                             "part": "covid-ct", "file": f"covid-ct/Images-processed/CT_COVID/{name}",
                             "split": split, "label": "COVID", "patient": f"Patient {pid}",
                             "finding": "covid"})
        lists[("COVID", split)] = sorted(names)
    # NonCOVID: crawled patients (.jpg, "<n>%<k>.jpg") and medpix patients (.png, running numbers)
    findings = list(NONCOVID_MIX)
    shares = np.array(list(NONCOVID_MIX.values()))
    crawled_n, medpix_n, number = 0, 0, int(rng.integers(10, 20))
    npid = 0
    for si, split in enumerate(splits):
        names, split_ids = [], []
        for count in _patient_counts(rng, cfg.noncovid[si], 1.3, 8):
            npid += 1
            finding = str(rng.choice(findings, p=shares / shares.sum()))
            p = sample_ct_patient(_rng(seed, code, 4, npid), finding, size=cfg.ct_size,
                                  mediastinal_window=0.06)
            levels = _slice_levels(_rng(seed, code, 5, npid), p, count)
            crawled = rng.random() < 0.5
            if crawled:
                patient = f"crawled_patient_{crawled_n}"
                pnames = [f"{crawled_n}%{k}.jpg" for k in range(count)] if count > 1 else [f"{crawled_n}.jpg"]
                crawled_n += 1
                mode = "L" if rng.random() < 0.1 else "RGB"
            else:
                patient = f"medpix_patient_{medpix_n}"
                medpix_n += 1
                pnames = []
                for _ in range(count):
                    pnames.append(f"{number}.png")
                    number += 1 + (int(rng.integers(1, 40)) if rng.random() < 0.3 else 0)
                number += int(rng.integers(1, 60))
                mode = "RGB"
            split_ids.append(patient)
            for k, name in enumerate(pnames):
                names.append(name)
                noncovid_meta.append((name, patient))
                jobs.append({"kind": "ct", "root": root, "key": (seed, code, 6, npid, k), "ct_patient": p,
                             "level": levels[k], "roundtrip": True, "fmt": "JPEG" if crawled else "PNG",
                             "mode": mode, "quality": 95, "part": "covid-ct",
                             "file": f"covid-ct/Images-processed/CT_NonCOVID/{name}", "split": split,
                             "label": "NonCOVID", "patient": patient, "finding": finding})
        pngs = sorted((n for n in names if n.endswith(".png")), key=lambda n: int(n[:-4]))
        lists[("NonCOVID", split)] = pngs + sorted(n for n in names if n.endswith(".jpg"))
        order = rng.permutation(len(split_ids))
        ids[split] = [split_ids[i] for i in order]
    meta = {"covid_rows": covid_rows, "lists": lists, "noncovid_meta": noncovid_meta, "ids": ids,
            "patients": {"COVID": pid, "NonCOVID": npid}}
    return jobs, meta


def _write_covid_ct_tables(root: Path, meta: dict[str, Any]) -> None:
    base = root / "covid-ct"
    for (cls, split), names in meta["lists"].items():
        text = "\n".join(names)
        if cls == "NonCOVID" or split == "test":  # the real COVID train/val lists lack the final newline
            text += "\n"
        _write(base / "Data-split" / cls / f"{split}CT_{cls}.txt", text.encode())
    for split, patients in meta["ids"].items():
        text = ",patient id\n" + "".join(f"{i},{pid}\n" for i, pid in enumerate(patients))
        _write(base / "Data-split" / "NonCOVID" / f"CT_NonCOVID_{split}_id.csv", text.encode())
    rows = sorted(meta["noncovid_meta"], key=lambda r: (r[0].endswith(".png"),
                                                        int(r[0][:-4]) if r[0].endswith(".png") else 0, r[0]))
    text = ",image name,patient id\n" + "".join(f"{i},{n},{p}\n" for i, (n, p) in enumerate(rows))
    _write(base / "NonCOVID-CT-MetaInfo.xlsx", text.encode())  # CSV text, as in the real data
    covid_rows = [list(r) for r in meta["covid_rows"]]
    covid_rows.append(["", "", "", "Synthetic data: captions describe the drawn findings. "])
    _write(base / "COVID-CT-MetaInfo.xlsx", _xlsx(covid_rows, sheet="positive_captions"))


def _xlsx(rows: list[list[str]], sheet: str) -> bytes:
    """A minimal SpreadsheetML workbook (shared strings, no header row, empty cells omitted)."""
    strings: dict[str, int] = {}
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            if value == "":
                continue
            idx = strings.setdefault(value, len(strings))
            cells.append(f'<c r="{"ABCD"[c]}{r}" t="s"><v>{idx}</v></c>')
        xml_rows.append(f'<row r="{r}" spans="1:4">{"".join(cells)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    n_refs = sum(1 for row in rows for v in row if v != "")
    sst = (f'{head}<sst {ns} count="{n_refs}" uniqueCount="{len(strings)}">'
           + "".join(f"<si><t>{escape(s)}</t></si>" for s in strings) + "</sst>")
    sheet_xml = (f'{head}<worksheet {ns} xmlns:r="{rel}"><dimension ref="A1:D{len(rows)}"/>'
                 f'<sheetData>{"".join(xml_rows)}</sheetData></worksheet>')
    workbook = (f'{head}<workbook {ns} xmlns:r="{rel}"><sheets>'
                f'<sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>')
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    files = {
        "[Content_Types].xml": (
            f'{head}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (f'{head}<Relationships xmlns="{pkg}"><Relationship Id="rId1" '
                        f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": workbook,
        "xl/_rels/workbook.xml.rels": (
            f'{head}<Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"),
        "xl/worksheets/sheet1.xml": sheet_xml,
        "xl/sharedStrings.xml": sst,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: same bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def _plan_covidx(seed: int, cfg: SynthScale, root: str) -> tuple[list[dict], dict[str, Any]]:
    code = _PART_CODE["covidx-mini"]
    rng = _rng(seed, code)
    jobs, lines = [], {"train": [], "test": []}
    pid = 0
    for split, counts in (("train", cfg.cxr_train), ("test", cfg.cxr_test)):
        for label, total in zip(CXR_LABELS, counts, strict=True):
            for count in _patient_counts(rng, total, 0.5, 3):
                pid += 1
                patient = f"synth-{pid}"
                for k in range(count):
                    ext = "png" if rng.random() < 0.35 else "jpg"
                    name = f"synth-{pid}-{k + 1}.{ext}"
                    mode = "L" if rng.random() < 0.3 else "RGB"
                    lines[split].append(f"{patient} {name} {label} synth")
                    jobs.append({"kind": "cxr", "root": root, "key": (seed, code, pid, k), "label": label,
                                 "size": cfg.cxr_size, "fmt": "PNG" if ext == "png" else "JPEG", "mode": mode,
                                 "quality": 90, "part": "covidx-mini", "file": f"covidx-mini/{split}/{name}",
                                 "split": split, "patient": patient, "finding": label})
    return jobs, {"lines": lines, "patients": pid}


def _plan_unlabeled(seed: int, cfg: SynthScale, root: str) -> tuple[list[dict], dict[str, Any]]:
    code = _PART_CODE["lung-ct-unlabeled"]
    rng = _rng(seed, code)
    jobs = []
    for v in range(1, cfg.volumes + 1):
        finding = "covid" if rng.random() < 0.6 else str(rng.choice(list(NONCOVID_MIX)))
        p = sample_ct_patient(_rng(seed, code, 1, v), finding, size=cfg.volume_size)
        p = replace(p, window=_lung_window(_rng(seed, code, 2, v)))
        lo, hi = rng.uniform(0.1, 0.25), rng.uniform(0.85, 0.97)
        volume = f"Synth-1_ctvolume_org_{v:03d}"
        for i, level in enumerate(np.linspace(lo, hi, cfg.volume_slices), start=1):
            jobs.append({"kind": "ct", "root": root, "key": (seed, code, 3, v, i), "ct_patient": p,
                         "level": float(level),
                         "rot": ORIENTATION["lung-ct-unlabeled"], "fmt": "JPEG", "mode": "L", "quality": 90,
                         "part": "lung-ct-unlabeled", "file": f"lung-ct-unlabeled/slices/{volume}_{i}.jpg",
                         "split": "train", "label": "", "patient": volume, "finding": finding})
    return jobs, {"volumes": cfg.volumes}


def _plan_medseg(seed: int, cfg: SynthScale, root: str) -> tuple[list[dict], dict[str, Any]]:
    code = _PART_CODE["medseg-covid"]
    counts = [cfg.medseg_pairs // cfg.medseg_patients + (i < cfg.medseg_pairs % cfg.medseg_patients)
              for i in range(cfg.medseg_patients)]
    jobs, n = [], 0
    for pi, count in enumerate(counts):
        rng = _rng(seed, code, 1, pi)
        p = sample_ct_patient(rng, "covid", size=cfg.volume_size)
        for les in p.lesions:  # medseg cases are moderate to severe
            les.strength = max(les.strength, float(rng.uniform(180, 380)))
        p = replace(p, window=_lung_window(rng), lesions=p.lesions + _sample_lesions(rng, p, "covid"))
        levels = _slice_levels(_rng(seed, code, 2, pi), p, count)
        for k in range(count):
            jobs.append({"kind": "ct", "root": root, "key": (seed, code, 3, pi, k), "ct_patient": p,
                         "level": levels[k], "ensure_lesion": True, "rot": ORIENTATION["medseg-covid"],
                         "fmt": "JPEG", "mode": "L",
                         "quality": 90, "part": "medseg-covid", "file": f"medseg-covid/images/{n}.jpg",
                         "mask_file": f"medseg-covid/masks/{n}.png", "split": "all", "label": "COVID",
                         "patient": f"medseg-patient-{pi}", "finding": "covid"})
            n += 1
    return jobs, {"pairs": n}


def _plan_natural(seed: int, cfg: SynthScale, root: str) -> tuple[list[dict], dict[str, Any]]:
    code = _PART_CODE["natural"]
    base = f"natural/{NATURAL_NAME}"
    rng = _rng(seed, code)
    val_numbers = iter(rng.permutation(cfg.natural_classes * cfg.natural_val))
    jobs = []
    for c in range(cfg.natural_classes):
        wnid = f"n9{c:07d}"
        files = [f"{base}/train/{wnid}/{wnid}_{i}.JPEG" for i in range(cfg.natural_train)]
        files += [f"{base}/val/{wnid}/val_{int(next(val_numbers))}.JPEG" for _ in range(cfg.natural_val)]
        jobs.append({"kind": "fractal", "root": root, "key": (seed, code, 1, c), "class": c, "wnid": wnid,
                     "size": cfg.natural_size, "files": files, "grey": rng.random(len(files)) < 0.02})
    return jobs, {"wnids": [j["wnid"] for j in jobs]}


def _sha256sums(folder: Path) -> None:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  ./{path.relative_to(folder).as_posix()}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))


def _run(jobs: list[dict], workers: int) -> list[dict]:
    if workers <= 1 or len(jobs) < 16:
        return [_job(j) for j in jobs]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers) as pool:
        return pool.map(_job, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


_PLANNERS = {"covid-ct": _plan_covid_ct, "covidx-mini": _plan_covidx, "lung-ct-unlabeled": _plan_unlabeled,
             "medseg-covid": _plan_medseg, "natural": _plan_natural}
_INDEX_COLUMNS = ("part", "file", "split", "label", "patient", "finding", "level", "height", "width",
                  "lesion_fraction", "lung_box")


def generate(out: str | os.PathLike, *, seed: int = 0, scale: str | SynthScale = "default",
             parts: tuple[str, ...] | list[str] = PARTS, overwrite: bool = False,
             workers: int | None = None) -> dict[str, Any]:
    """Write the synthetic data root to ``out`` and return its manifest (as in ``SYNTHETIC.json``).

    Args:
        out: the data root to create; laid out like ``../shared/data``.
        seed: same seed (and scale, parts, library versions) -> the same bytes.
        scale: "default", "tiny" (tests) or a :class:`SynthScale`.
        parts: which of :data:`PARTS` to write.
        overwrite: replace an existing non-empty ``out``. Everything is first written to a
            temporary sibling folder and renamed into place, so ``out`` is never half-written.
        workers: processes (default: up to 2); the output does not depend on it.

    The returned dict also has ``"seconds"`` (wall time per part and total), which is not
    written to disk (so the files stay deterministic).
    """
    out = Path(out)
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)} "
                             "or pass a SynthScale")
        cfg, scale_name = SCALES[scale], scale
    else:
        cfg, scale_name = scale, "custom"
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    parts = tuple(p for p in PARTS if p in parts)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it (it is replaced as a "
                              "whole, atomically) or choose an empty or new folder")
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    try:
        counts: dict[str, Any] = {}
        index: list[dict] = []
        for part in parts:
            t0 = time.perf_counter()
            jobs, meta = _PLANNERS[part](seed, cfg, str(tmp))
            rows = _run(jobs, workers)
            index += [r for r in rows if r and "natural_class" not in r]
            counts[part] = _finish_part(tmp, part, meta, rows, cfg)
            seconds[part] = round(time.perf_counter() - t0, 3)
        manifest = {
            "generator": "covtl.data.synth", "version": GENERATOR_VERSION, "seed": seed, "scale": scale_name,
            "config": asdict(cfg), "parts": list(parts), "counts": counts, "lobes": list(LOBES),
            "lobe_boxes": {k: list(v) for k, v in LOBE_BOXES.items()}, "orientation": ORIENTATION,
            "natural": NATURAL_NAME, "noncovid_mix": NONCOVID_MIX,
            "environment": {"python": platform.python_version(), "numpy": np.__version__,
                            "pillow": Image.__version__},
        }
        (tmp / "SYNTHETIC.json").write_text(dumps_json(manifest, indent=2) + "\n")
        with open(tmp / "SYNTHETIC-index.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=_INDEX_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(index)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds["total"] = round(time.perf_counter() - start, 3)
    return {**manifest, "seconds": seconds}


def _finish_part(root: Path, part: str, meta: dict[str, Any], rows: list[dict], cfg: SynthScale) -> dict:
    """Write the part's lists and tables, its SHA256SUMS, and return its counts."""
    if part == "covid-ct":
        _write_covid_ct_tables(root, meta)
        _sha256sums(root / "covid-ct")
        return {cls: dict(zip(("train", "val", "test"), getattr(cfg, cls.lower()), strict=True))
                for cls in ("COVID", "NonCOVID")} | {"patients": meta["patients"]}
    if part == "covidx-mini":
        for split, lines in meta["lines"].items():
            _write(root / "covidx-mini" / f"{split}.txt", "".join(f"{ln}\n" for ln in sorted(lines)).encode())
        _sha256sums(root / "covidx-mini")
        return {split: {lab: sum(1 for ln in lines if ln.split()[2] == lab) for lab in CXR_LABELS}
                for split, lines in meta["lines"].items()} | {"patients": meta["patients"]}
    if part == "lung-ct-unlabeled":
        _sha256sums(root / "lung-ct-unlabeled")
        return {"volumes": meta["volumes"], "slices": len(rows)}
    if part == "medseg-covid":
        _sha256sums(root / "medseg-covid")
        return {"pairs": meta["pairs"]}
    base = root / "natural" / NATURAL_NAME
    n_maps = {r["natural_class"]: r["maps"] for r in rows}
    _write(base / "classes.tsv", "".join(f"{i}\t{w}\tifs fractal {i}, {n_maps[i]}-map system\n"
                                         for i, w in enumerate(meta["wnids"])).encode())
    _sha256sums(base)
    return {"classes": len(meta["wnids"]), "train_per_class": cfg.natural_train,
            "val_per_class": cfg.natural_val}
