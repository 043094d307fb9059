"""Procedurally drawn faces with exact 19-class masks, so every command works on a fresh machine.

Each face is a stack of ellipses and polygons (cloth, neck, hair, ears, skin, brows, eyes, nose, lips, and
optionally glasses, a hat, earrings and a necklace) with random pose (yaw hides the far ear, and in profile
the far eye and brow), scale, roll, colours and noise. As in CelebAMask-HQ, the person's left parts ("l_")
are drawn on the image's right. The generator writes the real data's layout
(`train/images/*.jpg`, `train/masks/*.png`, `test/images/*.jpg`); nothing made from it is mistaken for
real data, because its folder and every output derived from it are named "synthetic".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facelib.labels import CLASS_NAMES, write_mask

C = {name: i for i, name in enumerate(CLASS_NAMES)}
SYNTHETIC_VERSION = 2
DONE_MARKER = ".complete"


@dataclass(frozen=True)
class FaceParams:
    """The random draw behind one face; kept so tests can reason about pose."""

    yaw: float  # -1..1; positive turns the face toward the image's right (the person's left)
    roll: float  # degrees
    glasses: bool
    hat: bool
    earrings: bool
    necklace: bool
    mouth_open: bool


def _jitter(rng: np.random.Generator, base: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _face_params(rng: np.random.Generator) -> FaceParams:
    profile = rng.random() < 0.2
    yaw = float(rng.uniform(0.8, 1.0) if profile else rng.uniform(-0.45, 0.45)) * float(rng.choice([-1, 1]))
    return FaceParams(
        yaw=yaw,
        roll=float(rng.uniform(-15, 15)),
        glasses=bool(rng.random() < 0.2),
        hat=bool(rng.random() < 0.12),
        earrings=bool(rng.random() < 0.2),
        necklace=bool(rng.random() < 0.15),
        mouth_open=bool(rng.random() < 0.4),
    )


def _colours(rng: np.random.Generator) -> dict[str, tuple[int, ...]]:
    """The fill of each part (and of the background, `"background"`), drawn in a fixed order."""
    skin = _jitter(rng, tuple(int(v) for v in rng.choice([(224, 180, 150), (190, 140, 105), (120, 80, 60)])), 20)
    hair = _jitter(rng, tuple(int(v) for v in rng.choice([(40, 30, 25), (110, 70, 40), (200, 170, 110)])), 20)
    return {
        "skin": skin,
        "nose": tuple(max(c - 25, 0) for c in skin),
        "l_ear": tuple(max(c - 12, 0) for c in skin),
        "neck": tuple(max(c - 18, 0) for c in skin),
        "hair": hair,
        "brow": tuple(max(c - 20, 0) for c in hair),
        "eye": _jitter(rng, (70, 50, 40), 20),
        "eye_g": _jitter(rng, (30, 30, 30), 20),
        "u_lip": _jitter(rng, (170, 70, 80), 20),
        "l_lip": _jitter(rng, (190, 85, 95), 20),
        "mouth": (60, 20, 25),
        "hat": _jitter(rng, (60, 90, 160), 60),
        "ear_r": (230, 200, 60),
        "neck_l": (220, 220, 230),
        "cloth": _jitter(rng, (90, 110, 90), 70),
        "background": _jitter(rng, (150, 150, 150), 90),
    }


class _Canvas:
    """A photo and its mask painted together: each shape in a part's colour and, in the mask, its class id."""

    def __init__(self, size: int, colours: dict[str, tuple[int, ...]]) -> None:
        self.size, self.colours = size, colours
        self.background = np.array(colours["background"], dtype=np.float32)
        self.image = Image.new("RGB", (size, size), tuple(int(v) for v in self.background))
        self.mask = Image.new("L", (size, size), 0)
        self.on_image, self.on_mask = ImageDraw.Draw(self.image), ImageDraw.Draw(self.mask)

    def paint(self, shape: str, xy, class_name: str, colour: str | None = None, **kw) -> None:
        getattr(self.on_image, shape)(xy, fill=self.colours[colour or class_name], **kw)
        getattr(self.on_mask, shape)(xy, fill=C[class_name], **kw)

    def finish(
        self, roll: float, centre: tuple[float, float], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Roll the whole head, put the background back where rotation left holes, add noise and blur."""
        size = self.size
        image = self.image.rotate(roll, resample=Image.BILINEAR, center=centre)
        mask = self.mask.rotate(roll, resample=Image.NEAREST, center=centre, fillcolor=0)
        ids = np.array(mask, dtype=np.uint8)
        pixels = np.array(image, dtype=np.float32)
        gradient = np.linspace(-25, 25, size, dtype=np.float32)[:, None, None]
        pixels[ids == 0] = (self.background + gradient + np.zeros((size, size, 3), np.float32))[ids == 0]
        pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
        picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
        return np.array(picture), ids


@dataclass(frozen=True)
class _Pose:
    """Where one face sits: centre, half-width and half-height, the turn, and the features' centre line."""

    cx: float
    cy: float
    a: float
    b: float
    yaw: float

    @classmethod
    def draw(cls, size: int, yaw: float, rng: np.random.Generator) -> _Pose:
        s = float(size)
        cx = s / 2 + rng.uniform(-0.05, 0.05) * s
        cy = s * 0.47 + rng.uniform(-0.04, 0.04) * s
        a = s * rng.uniform(0.16, 0.21)  # face half-width
        return cls(cx, cy, a, a * rng.uniform(1.25, 1.4), yaw)

    @property
    def fx(self) -> float:
        return self.cx + self.yaw * self.a * 0.45  # the features' centre line moves with the turn

    # Person's right side is the image's left; yaw > 0 hides/compresses the image's right (far) side.
    def far(self, image_side: int) -> bool:
        return (self.yaw > 0 and image_side > 0) or (self.yaw < 0 and image_side < 0)

    def side_offset(self, distance: float, image_side: int) -> float:
        turn = abs(self.yaw)
        return image_side * distance * (1 - 0.7 * turn if self.far(image_side) else 1 + 0.15 * turn)


def _paint_head(canvas: _Canvas, pose: _Pose, params: FaceParams, rng: np.random.Generator) -> None:
    """Back to front: hair (long hair falls behind the shoulders), then neck, necklace and cloth over it, the
    ears (the far one hidden when the head is turned), the face and a hat."""
    paint, cx, cy, a, b, yaw = canvas.paint, pose.cx, pose.cy, pose.a, pose.b, pose.yaw
    paint("ellipse", _ellipse(cx - yaw * a * 0.1, cy - b * 0.2, a * 1.22, b * 1.02), "hair")
    if rng.random() < 0.5:
        paint("rectangle", [cx - a * 1.2, cy - b * 0.2, cx + a * 1.2, cy + b * 1.1], "hair")
    paint("rectangle", [cx - a * 0.5, cy + b * 0.5, cx + a * 0.5, cy + b * 1.35], "neck")
    if params.necklace:
        paint("rectangle", [cx - a * 0.5, cy + b * 1.12, cx + a * 0.5, cy + b * 1.2], "neck_l")
    shoulders = [(cx - a * 0.7, cy + b * 1.25), (cx + a * 0.7, cy + b * 1.25), (cx + a * 2.2, canvas.size)]
    paint("polygon", [*shoulders, (cx - a * 2.2, canvas.size)], "cloth")
    for image_side, ear in ((+1, "l_ear"), (-1, "r_ear")):
        if pose.far(image_side) and abs(yaw) > 0.3:
            continue
        ex = cx + image_side * a * (0.97 + 0.1 * abs(yaw))
        paint("ellipse", _ellipse(ex, cy - b * 0.02, a * 0.17, b * 0.2), ear, colour="l_ear")
        if params.earrings:
            paint("ellipse", _ellipse(ex, cy + b * 0.22, a * 0.05, a * 0.05), "ear_r")
    paint("ellipse", _ellipse(cx, cy, a, b), "skin")
    if params.hat:
        paint("chord", _ellipse(cx, cy - b * 0.45, a * 1.3, b * 0.8), "hat", start=180, end=360)


def _paint_features(canvas: _Canvas, pose: _Pose, params: FaceParams) -> None:
    """Brows, eyes (the far ones hidden in profile) and glasses, nose, lips and an open mouth."""
    paint, cy, a, b, yaw, fx = canvas.paint, pose.cy, pose.a, pose.b, pose.yaw, pose.fx
    eye_y, eye_rx, eye_ry = cy - b * 0.12, a * 0.17, a * 0.075
    for image_side, eye, brow in ((+1, "l_eye", "l_brow"), (-1, "r_eye", "r_brow")):
        if pose.far(image_side) and abs(yaw) > 0.75:
            continue
        ex = fx + pose.side_offset(a * 0.42, image_side)
        squeeze = 1 - 0.5 * abs(yaw) if (yaw * image_side) > 0 else 1.0
        brow_rx = eye_rx * 1.2 * squeeze
        paint("rectangle", [ex - brow_rx, eye_y - b * 0.2, ex + brow_rx, eye_y - b * 0.14], brow, colour="brow")
        if params.glasses:
            paint("ellipse", _ellipse(ex, eye_y, eye_rx * 1.7 * squeeze, eye_ry * 3.2), "eye_g")
        paint("ellipse", _ellipse(ex, eye_y, eye_rx * squeeze, eye_ry), eye, colour="eye")
    if params.glasses:
        paint("rectangle", [fx - a * 0.12, eye_y - a * 0.02, fx + a * 0.12, eye_y + a * 0.02], "eye_g")
    tip, bridge = fx + yaw * a * 0.25, eye_y + b * 0.05
    nose = [
        (fx - a * 0.04, bridge),
        (fx + a * 0.04, bridge),
        (tip + a * 0.14, cy + b * 0.28),
        (tip - a * 0.14, cy + b * 0.28),
    ]
    paint("polygon", nose, "nose")
    mouth_y, lip_rx, lip_ry = cy + b * 0.52, a * 0.3 * (1 - 0.3 * abs(yaw)), b * 0.09
    paint("chord", _ellipse(fx, mouth_y, lip_rx, lip_ry), "u_lip", start=180, end=360)
    paint("chord", _ellipse(fx, mouth_y, lip_rx, lip_ry * 1.2), "l_lip", start=0, end=180)
    if params.mouth_open:
        paint("ellipse", _ellipse(fx, mouth_y, lip_rx * 0.7, lip_ry * 0.45), "mouth")


def draw_face(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, FaceParams]:
    """Draw one face; return the RGB image (H, W, 3) uint8, its class-id mask (H, W) uint8 and its params."""
    params = _face_params(rng)
    canvas = _Canvas(size, _colours(rng))
    pose = _Pose.draw(size, params.yaw, rng)
    _paint_head(canvas, pose, params, rng)
    _paint_features(canvas, pose, params)
    image, mask = canvas.finish(params.roll, (pose.cx, pose.cy), rng)
    return image, mask, params


def write_synthetic_dataset(
    root: str | Path, n_train: int = 200, n_test: int = 20, size: int = 256, seed: int = 0
) -> Path:
    """Write a synthetic dataset in the real data's layout; built in a temporary folder, then renamed."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for sub in ("train/images", "train/masks", "test/images"):
            (staging / sub).mkdir(parents=True)
        for index in range(n_train + n_test):
            rng = np.random.default_rng([seed, index])
            image, mask, _ = draw_face(size, rng)
            stem = f"synthetic_{index:05d}"
            if index < n_train:
                Image.fromarray(image).save(staging / "train/images" / f"{stem}.jpg", quality=92)
                write_mask(mask, staging / "train/masks" / f"{stem}.png")
            else:
                Image.fromarray(image).save(staging / "test/images" / f"{stem}.jpg", quality=92)
        (staging / DONE_MARKER).write_text(f"version={SYNTHETIC_VERSION} n_train={n_train} n_test={n_test}\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def cache_dir() -> Path:
    """Where generated data lives: $FACELIB_CACHE, else ~/.cache/facelib."""
    return Path(os.environ.get("FACELIB_CACHE", Path.home() / ".cache" / "facelib"))


def default_synthetic_root(n_train: int = 200, n_test: int = 20, size: int = 256, seed: int = 0) -> Path:
    """The built-in synthetic dataset, generated on first use (a few seconds) and reused afterwards."""
    root = cache_dir() / f"synthetic-v{SYNTHETIC_VERSION}-n{n_train}-t{n_test}-s{size}-seed{seed}"
    if not (root / DONE_MARKER).exists():
        write_synthetic_dataset(root, n_train=n_train, n_test=n_test, size=size, seed=seed)
    return root
