"""Procedural colour fundus photographs with diabetic-retinopathy lesions, in the EyePACS layout.

No real data set can be downloaded where FedGAN is developed and tested, so this module makes a
stand-in that exercises the same reader as the real Kaggle/EyePACS files: `DIR/train/<id>.jpeg`
plus `DIR/trainLabels.csv` with `image,level`.

Every image is drawn from its own random stream, seeded by (seed, index), so the output does not
depend on how many worker processes drew it. Anatomy varies per image (field of view, laterality,
disc, macula, a branching vessel tree with tapering widths, pigmentation and illumination);
lesions follow the international DR grading scale:

====== ==============================================================================
grade  lesions drawn
====== ==============================================================================
0      none
1      a few microaneurysms
2      more microaneurysms, dot/blot and flame haemorrhages, hard exudates
3      many haemorrhages in all four quadrants, cotton-wool spots, venous beading
4      neovascular tufts, pre-retinal (boat-shaped) haemorrhage, often laser scars
====== ==============================================================================

Sizes are defined on a 512 px reference and scaled, so lesions keep their anatomical size at
any resolution. Colours are sRGB in [0, 1], tuned so that the histograms inside the field of
view match the real photograph that ships with scikit-image (see the tests).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

Point = tuple[float, float]

#: sRGB colours of the structures (R, G, B).
RED_LESION = np.array([0.50, 0.09, 0.06], np.float32)
EXUDATE = np.array([0.98, 0.90, 0.55], np.float32)
COTTON_WOOL = np.array([0.93, 0.85, 0.74], np.float32)
DISC_RIM = np.array([1.00, 0.78, 0.52], np.float32)
DISC_CUP = np.array([1.00, 0.92, 0.78], np.float32)
SCAR_PIGMENT = np.array([0.22, 0.10, 0.06], np.float32)
#: Fraction of each channel a fully opaque vessel removes.
VEIN_ABSORPTION = np.array([0.30, 0.62, 0.55], np.float32)
ARTERY_ABSORPTION = np.array([0.18, 0.45, 0.40], np.float32)


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Where the landmarks of one eye are, in normalised coordinates (x, y in [-1, 1] of height)."""

    centre: Point  # centre of the circular field of view
    radius: float  # field-of-view radius
    disc: Point
    disc_radius: float
    macula: Point
    temporal: float  # +1 when the macula lies to the right of the disc, -1 otherwise


class Canvas:
    """A float RGB image with normalised coordinates; `scale` turns reference pixels into pixels."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.scale = height / 512.0
        self.rgb = np.zeros((height, width, 3), np.float32)
        ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
        xs = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / height * 2
        self.x, self.y = np.meshgrid(xs, ys)

    def to_pixels(self, point: Point) -> tuple[int, int]:
        """Normalised (x, y) to integer pixel coordinates with 4 fractional bits (cv2 `shift`)."""
        px = (point[0] * self.height / 2 + self.width / 2) * 16
        py = (point[1] + 1) * self.height / 2 * 16
        return int(round(px)), int(round(py))

    def blend(self, alpha: np.ndarray, colour: np.ndarray) -> None:
        """Paint `colour` with per-pixel opacity `alpha` (H x W, 0..1), only where alpha > 0."""
        x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
        if w == 0 or h == 0:
            return
        a = alpha[y : y + h, x : x + w, None]
        region = self.rgb[y : y + h, x : x + w]
        region *= 1 - a
        region += a * colour

    def new_mask(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Band-limited noise with unit-ish amplitude: a coarse random grid, upsampled bicubically."""
    grid = rng.standard_normal((cells, max(2, round(cells * width / height)))).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def sample_anatomy(rng: np.random.Generator, laterality: str) -> Anatomy:
    """Landmarks of a left or right eye (the optic disc lies on the nasal side of the image)."""
    radius = float(rng.uniform(0.93, 1.04))  # > 1 clips the circle at top and bottom, as EyePACS often is
    centre = (float(rng.normal(0, 0.015)), float(rng.normal(0, 0.015)))
    nasal = -1.0 if laterality == "left" else 1.0
    disc = (centre[0] + nasal * radius * rng.uniform(0.40, 0.52), centre[1] + rng.normal(0, 0.05))
    macula = (disc[0] - nasal * rng.uniform(0.42, 0.52), disc[1] + rng.uniform(0.0, 0.07))
    return Anatomy(centre, radius, disc, float(rng.uniform(0.095, 0.12)), macula, -nasal)


def paint_background(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Orange-red fundus with pigmentation, choroidal texture and illumination falloff.

    Returns the soft field-of-view mask (1 inside, 0 outside) used to black out the border.
    """
    red = rng.uniform(0.86, 1.0)
    green = red * rng.uniform(0.36, 0.46)
    blue = green * rng.uniform(0.66, 0.82)
    base = np.array([red, green, blue], np.float32)
    dx, dy = canvas.x - anatomy.centre[0], canvas.y - anatomy.centre[1]
    r = np.sqrt(dx * dx + dy * dy) / anatomy.radius
    angle = rng.uniform(0, 2 * math.pi)
    illumination = (
        1.0
        - rng.uniform(0.20, 0.38) * r**2.4
        + rng.uniform(0.0, 0.08) * (dx * math.cos(angle) + dy * math.sin(angle))
        + 0.045 * smooth_noise(rng, canvas.height, canvas.width, 6)
        + 0.018 * smooth_noise(rng, canvas.height, canvas.width, 48)
    )
    # Choroidal vessels show through as a faint coarse orange pattern mostly in green.
    texture = 0.03 * smooth_noise(rng, canvas.height, canvas.width, 24)
    canvas.rgb[:] = base * illumination[..., None]
    canvas.rgb[..., 1] *= 1 + texture
    edge_px = anatomy.radius * canvas.height / 2
    return np.clip((1 - r) * edge_px + 0.5, 0, 1).astype(np.float32)


def gaussian_spot(canvas: Canvas, centre: Point, sigma: float, power: float = 2.0) -> np.ndarray:
    d = np.sqrt((canvas.x - centre[0]) ** 2 + (canvas.y - centre[1]) ** 2) / sigma
    return np.exp(-(d**power)).astype(np.float32)


def paint_macula_and_disc(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Darker macula with a fovea; bright yellowish disc with a paler cup and a faint halo."""
    macula = gaussian_spot(canvas, anatomy.macula, rng.uniform(0.10, 0.16))
    fovea = gaussian_spot(canvas, anatomy.macula, rng.uniform(0.02, 0.035))
    canvas.rgb *= (1 - rng.uniform(0.18, 0.32) * macula - 0.10 * fovea)[..., None]
    halo = gaussian_spot(canvas, anatomy.disc, anatomy.disc_radius * 2.3)
    canvas.rgb *= (1 + rng.uniform(0.08, 0.2) * halo)[..., None]
    stretch = rng.uniform(1.0, 1.15)
    d = np.sqrt((canvas.x - anatomy.disc[0]) ** 2 + ((canvas.y - anatomy.disc[1]) / stretch) ** 2)
    rim = np.exp(-((d / anatomy.disc_radius) ** 4)).astype(np.float32)
    canvas.blend(rim * rng.uniform(0.85, 0.95), DISC_RIM * rng.uniform(0.85, 1.0))
    cup_centre = (anatomy.disc[0] + anatomy.temporal * anatomy.disc_radius * 0.2, anatomy.disc[1])
    cup = gaussian_spot(canvas, cup_centre, anatomy.disc_radius * rng.uniform(0.3, 0.5), power=3)
    canvas.blend(cup * 0.8, DISC_CUP)


@dataclasses.dataclass
class VesselWalk:
    """One growing vessel: a random walk whose heading relaxes toward `target` and whose width tapers."""

    position: Point
    heading: float
    width: float  # reference pixels
    target: float | None  # preferred heading (radians), None for a free walk
    beaded: bool = False


def grow_vessel_tree(
    rng: np.random.Generator, anatomy: Anatomy, root: VesselWalk, segments: list[tuple[Point, Point, float, bool]]
) -> None:
    """Append the segments of a branching tree to `segments` as (start, end, width, beaded)."""
    step = 0.022
    stack = [root]
    while stack:
        walk = stack.pop()
        x, y = walk.position
        for _ in range(160):
            if walk.width < 1.1:
                break
            if walk.target is not None:
                walk.heading += 0.035 * math.remainder(walk.target - walk.heading, 2 * math.pi)
            walk.heading += rng.normal(0, 0.13)
            nx, ny = x + step * math.cos(walk.heading), y + step * math.sin(walk.heading)
            if math.hypot(nx - anatomy.centre[0], ny - anatomy.centre[1]) > anatomy.radius * 0.99:
                break
            segments.append(((x, y), (nx, ny), walk.width, walk.beaded))
            x, y = nx, ny
            walk.width *= 0.988
            if walk.width > 2.0 and rng.random() < 0.07:
                side = rng.choice((-1.0, 1.0))
                child_heading = walk.heading + side * rng.uniform(0.45, 1.1)
                child_width = walk.width * rng.uniform(0.5, 0.75)
                stack.append(VesselWalk((x, y), child_heading, child_width, None, walk.beaded))
                walk.width *= 0.93


def vessel_roots(rng: np.random.Generator, anatomy: Anatomy, beaded: bool) -> list[tuple[VesselWalk, bool]]:
    """The main arcades leaving the disc: (walk, is_vein) for a vein and an artery per arcade."""
    temporal_axis = 0.0 if anatomy.temporal > 0 else math.pi
    nasal_axis = math.pi - temporal_axis
    roots: list[tuple[VesselWalk, bool]] = []
    for up in (-1.0, 1.0):  # y grows downwards: -1 is superior
        for axis, spread, target_spread in ((temporal_axis, 1.3, 0.15), (nasal_axis, 0.8, 0.35)):
            sign = up if axis == temporal_axis else -up
            for is_vein, base_width in ((True, 6.2), (False, 4.6)):
                heading = axis + sign * anatomy.temporal * (spread + rng.normal(0, 0.12))
                target = axis + sign * anatomy.temporal * target_spread
                heading = math.remainder(heading, 2 * math.pi)
                width = base_width * rng.uniform(0.85, 1.15) * (1.0 if axis == temporal_axis else 0.8)
                start = (anatomy.disc[0] + rng.normal(0, 0.02), anatomy.disc[1] + rng.normal(0, 0.02))
                walk = VesselWalk(start, heading, width, target, beaded and is_vein)
                roots.append((walk, is_vein))
    for _ in range(rng.integers(1, 4)):  # small macular branches straight from the disc
        heading = temporal_axis + rng.normal(0, 0.35)
        roots.append((VesselWalk(anatomy.disc, heading, rng.uniform(1.8, 2.6), None), bool(rng.random() < 0.5)))
    return roots


def paint_vessels(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator, beaded: bool) -> list[Point]:
    """Draw veins and arteries; return points on the vessels (where new vessels may sprout)."""
    masks = {is_vein: np.zeros((canvas.height, canvas.width), np.uint8) for is_vein in (True, False)}
    on_vessels: list[Point] = []
    for root, is_vein in vessel_roots(rng, anatomy, beaded):
        segments: list[tuple[Point, Point, float, bool]] = []
        grow_vessel_tree(rng, anatomy, root, segments)
        for index, (start, end, width, is_beaded) in enumerate(segments):
            if is_beaded and width > 2.5:
                width *= 1.0 + 0.55 * max(0.0, math.sin(index * 1.4))
            px_width = width * canvas.scale
            thickness = max(1, int(round(px_width)))
            intensity = int(255 * min(1.0, px_width / 1.2))
            cv2.line(
                masks[is_vein], canvas.to_pixels(start), canvas.to_pixels(end), intensity, thickness, cv2.LINE_AA, 4
            )
        on_vessels.extend(seg[1] for seg in segments[::7])
    sigma = 0.5 * canvas.scale + 0.2
    for is_vein, absorption in ((True, VEIN_ABSORPTION), (False, ARTERY_ABSORPTION)):
        density = cv2.GaussianBlur(masks[is_vein].astype(np.float32) / 255, (0, 0), sigma)
        canvas.rgb *= 1 - density[..., None] * absorption
    return on_vessels


def sample_points(
    rng: np.random.Generator, anatomy: Anatomy, count: int, *, max_r: float = 0.85, quadrants: bool = False
) -> list[Point]:
    """Lesion sites on the retina away from the disc; `quadrants` spreads them over all four."""
    points: list[Point] = []
    attempts = 0
    while len(points) < count and attempts < count * 50:
        attempts += 1
        if quadrants:
            q = len(points) % 4
            angle = rng.uniform(q * math.pi / 2, (q + 1) * math.pi / 2)
        else:
            angle = rng.uniform(0, 2 * math.pi)
        r = anatomy.radius * max_r * math.sqrt(rng.uniform(0.02, 1.0))
        centre = anatomy.macula if rng.random() < 0.5 else anatomy.centre
        x, y = centre[0] + r * math.cos(angle), centre[1] + r * math.sin(angle)
        if math.hypot(x - anatomy.centre[0], y - anatomy.centre[1]) > anatomy.radius * 0.92:
            continue
        if math.hypot(x - anatomy.disc[0], y - anatomy.disc[1]) < anatomy.disc_radius * 1.6:
            continue
        points.append((x, y))
    return points


def draw_blots(
    canvas: Canvas,
    mask: np.ndarray,
    points: list[Point],
    rng: np.random.Generator,
    radius: tuple[float, float],
    lobes: int = 1,
) -> None:
    """Round or irregular (several overlapping lobes) spots into `mask`."""
    for point in points:
        cx, cy = canvas.to_pixels(point)
        r = rng.uniform(*radius) * canvas.scale
        for _ in range(rng.integers(1, lobes + 1)):
            ox, oy = rng.normal(0, r * 0.45, 2) if lobes > 1 else (0.0, 0.0)
            axes = (int(r * rng.uniform(0.7, 1.1) * 16), int(r * rng.uniform(0.7, 1.1) * 16))
            centre = (cx + int(ox * 16), cy + int(oy * 16))
            cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA, 4)


def draw_flames(
    canvas: Canvas, mask: np.ndarray, anatomy: Anatomy, points: list[Point], rng: np.random.Generator
) -> None:
    """Flame haemorrhages: streaks along the nerve-fibre direction (radial from the disc)."""
    for point in points:
        angle = math.degrees(math.atan2(point[1] - anatomy.disc[1], point[0] - anatomy.disc[0]))
        axes = (int(rng.uniform(6, 14) * canvas.scale * 16), int(rng.uniform(1.8, 3.5) * canvas.scale * 16))
        cv2.ellipse(mask, canvas.to_pixels(point), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)


def draw_exudate_clusters(
    canvas: Canvas, mask: np.ndarray, anatomy: Anatomy, clusters: int, rng: np.random.Generator
) -> None:
    """Hard exudates: small sharp yellow spots in clusters, often ringing the macula."""
    for _ in range(clusters):
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.08, 0.35)
        cx = anatomy.macula[0] + dist * math.cos(angle)
        cy = anatomy.macula[1] + dist * math.sin(angle)
        for _ in range(rng.integers(4, 14)):
            spot = (cx + rng.normal(0, 0.035), cy + rng.normal(0, 0.035))
            r = int(rng.uniform(1.3, 3.2) * canvas.scale * 16)
            cv2.circle(mask, canvas.to_pixels(spot), r, 1.0, -1, cv2.LINE_AA, 4)


def draw_tufts(canvas: Canvas, mask: np.ndarray, sites: list[Point], rng: np.random.Generator) -> None:
    """Neovascular tufts: tangles of fine looping vessels."""
    for site in sites:
        for _ in range(rng.integers(12, 26)):
            x, y = site[0] + rng.normal(0, 0.03), site[1] + rng.normal(0, 0.03)
            heading = rng.uniform(0, 2 * math.pi)
            points = []
            for _ in range(rng.integers(4, 9)):
                heading += rng.normal(0.9, 0.5)
                x += 0.012 * math.cos(heading)
                y += 0.012 * math.sin(heading)
                points.append(canvas.to_pixels((x, y)))
            thickness = max(1, int(round(1.4 * canvas.scale)))
            cv2.polylines(mask, [np.array(points, np.int32)], False, 1.0, thickness, cv2.LINE_AA, 4)


def draw_boat_haemorrhage(canvas: Canvas, mask: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Pre-retinal haemorrhage: blood pooled under gravity, a disc with a flat top edge."""
    site = (anatomy.disc[0] + anatomy.temporal * rng.uniform(0.1, 0.4), anatomy.disc[1] + rng.uniform(0.05, 0.3))
    radius_px = rng.uniform(22, 45) * canvas.scale
    cx, cy = canvas.to_pixels(site)
    blob = np.zeros_like(mask)
    cv2.circle(blob, (cx, cy), int(radius_px * 16), 1.0, -1, cv2.LINE_AA, 4)
    level = int(cy / 16 - radius_px * rng.uniform(0.1, 0.45))
    blob[: max(level, 0)] = 0
    np.maximum(mask, blob, out=mask)


def draw_laser_scars(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Pan-retinal photocoagulation scars: pigmented rings with pale centres in the periphery."""
    pigment, pale = canvas.new_mask(), canvas.new_mask()
    for _ in range(rng.integers(40, 110)):
        angle, r = rng.uniform(0, 2 * math.pi), anatomy.radius * rng.uniform(0.55, 0.9)
        point = (anatomy.centre[0] + r * math.cos(angle), anatomy.centre[1] + r * math.sin(angle))
        radius = int(rng.uniform(3.0, 5.5) * canvas.scale * 16)
        cv2.circle(pigment, canvas.to_pixels(point), radius, 0.8, -1, cv2.LINE_AA, 4)
        cv2.circle(pale, canvas.to_pixels(point), radius // 2, 0.6, -1, cv2.LINE_AA, 4)
    canvas.blend(pigment, SCAR_PIGMENT)
    canvas.blend(pale, COTTON_WOOL)


def paint_lesions(
    canvas: Canvas, anatomy: Anatomy, grade: int, on_vessels: list[Point], rng: np.random.Generator
) -> None:
    """Draw the lesions of `grade`; counts grow with severity (see the module docstring)."""
    if grade == 0:
        return
    red, bright, fluffy = canvas.new_mask(), canvas.new_mask(), canvas.new_mask()
    spread = grade >= 3
    microaneurysms = {1: (1, 6), 2: (6, 20), 3: (15, 40), 4: (10, 30)}[grade]
    draw_blots(canvas, red, sample_points(rng, anatomy, int(rng.integers(*microaneurysms))), rng, (1.7, 2.8))
    if grade >= 2:
        blots = {2: (2, 10), 3: (20, 40), 4: (8, 30)}[grade]
        points = sample_points(rng, anatomy, int(rng.integers(*blots)), quadrants=spread)
        draw_blots(canvas, red, points, rng, (3.0, 8.0), lobes=3)
        flames = {2: (0, 3), 3: (3, 9), 4: (1, 6)}[grade]
        draw_flames(
            canvas, red, anatomy, sample_points(rng, anatomy, int(rng.integers(*flames)), quadrants=spread), rng
        )
        if rng.random() < {2: 0.6, 3: 0.7, 4: 0.5}[grade]:
            draw_exudate_clusters(canvas, bright, anatomy, int(rng.integers(1, 4)), rng)
        cotton_wool = {2: (0, 2), 3: (2, 7), 4: (0, 5)}[grade]
        draw_blots(
            canvas,
            fluffy,
            sample_points(rng, anatomy, int(rng.integers(*cotton_wool)), max_r=0.6),
            rng,
            (6.0, 13.0),
            lobes=2,
        )
    if grade == 4:
        if rng.random() < 0.35:
            draw_laser_scars(canvas, anatomy, rng)
        sites = [anatomy.disc] if rng.random() < 0.5 else []
        picks = rng.choice(len(on_vessels), size=int(rng.integers(1, 3)), replace=False) if on_vessels else []
        sites += [on_vessels[i] for i in picks]
        draw_tufts(canvas, red, sites, rng)
        if rng.random() < 0.7:
            draw_boat_haemorrhage(canvas, red, anatomy, rng)
    fluffy = cv2.GaussianBlur(fluffy, (0, 0), 2.5 * canvas.scale)
    canvas.blend(np.clip(fluffy, 0, 1) * 0.75, COTTON_WOOL)
    canvas.blend(cv2.GaussianBlur(np.clip(red, 0, 1), (0, 0), 0.7 * canvas.scale) * 0.85, RED_LESION)
    canvas.blend(np.clip(bright, 0, 1) * 0.9, EXUDATE)


def photograph(canvas: Canvas, fov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects (defocus, white balance, sensor noise), black outside the field; uint8 BGR."""
    rgb = cv2.GaussianBlur(canvas.rgb, (0, 0), rng.uniform(0.3, 0.9) * canvas.scale)
    rgb *= rng.uniform(0.94, 1.06, 3).astype(np.float32) * rng.uniform(0.9, 1.08)
    rgb += np.float32(0.008) * rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb *= fov[..., None]
    bgr = np.clip(rgb[..., ::-1] * 255 + 0.5, 0, 255).astype(np.uint8)
    return bgr


def render_fundus(grade: int, size: int, rng: np.random.Generator, laterality: str = "left") -> np.ndarray:
    """One fundus photograph of the given DR grade as a uint8 BGR array of height `size`."""
    if grade not in range(5):
        raise ValueError(f"grade must be 0-4, got {grade}")
    aspect = float(rng.choice((1.0, 1.0, 1.33, 1.5)))  # EyePACS cameras differ in sensor shape
    canvas = Canvas(size, int(round(size * aspect / 2)) * 2)
    anatomy = sample_anatomy(rng, laterality)
    fov = paint_background(canvas, anatomy, rng)
    paint_macula_and_disc(canvas, anatomy, rng)
    on_vessels = paint_vessels(canvas, anatomy, rng, beaded=grade >= 3)
    paint_lesions(canvas, anatomy, grade, on_vessels, rng)
    return photograph(canvas, fov, rng)
