"""Procedural abdominal CT slices in Hounsfield units, written as real DICOM series.

A stand-in for the RSNA Abdominal Trauma set (`DIR/<patient>/<series>/<n>.dcm`), used to
pretrain the generator on anatomy that resembles grayscale medical images before federated
fine-tuning on fundus photographs. Each patient has its own body habitus; organs appear and
shrink along the cranio-caudal axis (lung bases and liver dome at the top slices, kidneys in the
middle, iliac wings at the bottom). Values are Hounsfield units (air -1000, fat about -100,
soft tissue 30-60, contrast-filled vessels about 180, bone 250-900) with scanner-like noise.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AIR, FAT, SOFT, MUSCLE, LIVER, SPLEEN, BLOOD, CONTRAST, CORTEX, TRABECULAR, CORTICAL, LUNG = (
    -1000,
    -100,
    30,
    50,
    60,
    45,
    40,
    180,
    150,
    250,
    800,
    -850,
)


@dataclasses.dataclass(frozen=True)
class Body:
    """One patient's habitus, in normalised image coordinates ([-1, 1] across the field)."""

    width: float  # lateral semi-axis of the body outline
    depth: float  # antero-posterior semi-axis
    fat: float  # subcutaneous fat thickness
    liver_scale: float
    shift: tuple[float, float]


def sample_body(rng: np.random.Generator) -> Body:
    return Body(
        width=float(rng.uniform(0.72, 0.88)),
        depth=float(rng.uniform(0.52, 0.66)),
        fat=float(rng.uniform(0.03, 0.11)),
        liver_scale=float(rng.uniform(0.85, 1.15)),
        shift=(float(rng.normal(0, 0.02)), float(rng.uniform(0.0, 0.06))),
    )


class Slice:
    """An HU image being painted with filled ellipses (later shapes cover earlier ones)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hu = np.full((size, size), AIR, np.float32)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], value: float, angle: float = 0.0) -> None:
        if min(axes) <= 0:
            return
        half = self.size / 2
        c = (int((centre[0] + 1) * half * 16), int((centre[1] + 1) * half * 16))
        a = (int(axes[0] * half * 16), int(axes[1] * half * 16))
        cv2.ellipse(self.hu, c, a, angle, 0, 360, float(value), -1, cv2.LINE_AA, 4)


def bump(z: float, start: float, peak: float, end: float) -> float:
    """0 outside [start, end], rising to 1 at `peak`: how much of an organ a slice cuts through."""
    if z <= start or z >= end:
        return 0.0
    return math.sin(math.pi / 2 * ((z - start) / (peak - start) if z < peak else (end - z) / (end - peak)))


def render_ct_slice(body: Body, z: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice at relative height `z` (0 = diaphragm, 1 = pelvis) in HU, int16."""
    s = Slice(size)
    ox, oy = body.shift
    at = lambda x, y: (x + ox, y + oy)  # noqa: E731 - local shorthand for shifted coordinates
    s.ellipse(at(0, 0.62 + body.depth), (0.9, 0.03), 100)  # scanner table
    s.ellipse(at(0, 0), (body.width, body.depth), SOFT)  # skin
    s.ellipse(at(0, 0), (body.width - 0.01, body.depth - 0.01), FAT)
    wall = (body.width - body.fat, body.depth - body.fat)
    s.ellipse(at(0, 0), wall, MUSCLE)
    s.ellipse(at(0, 0.02), (wall[0] - 0.04, wall[1] - 0.05), FAT - 10)  # visceral fat
    lungs = bump(z, -0.2, 0.0, 0.25)
    for side in (-1, 1):
        s.ellipse(at(side * 0.38, 0.05), (0.22 * lungs, 0.3 * lungs), LUNG)
    liver = bump(z, -0.1, 0.2, 0.6) * body.liver_scale
    s.ellipse(at(-0.3, -0.02), (0.38 * liver, 0.4 * liver), LIVER + rng.normal(0, 4), angle=-20)
    spleen = bump(z, 0.0, 0.15, 0.4)
    s.ellipse(at(0.48, 0.12), (0.12 * spleen, 0.2 * spleen), SPLEEN, angle=30)
    kidneys = bump(z, 0.3, 0.5, 0.72)
    for side in (-1, 1):
        centre = at(side * 0.3, 0.25)
        s.ellipse(centre, (0.1 * kidneys, 0.14 * kidneys), CORTEX, angle=side * 25)
        s.ellipse(centre, (0.05 * kidneys, 0.08 * kidneys), BLOOD, angle=side * 25)
    bowel = bump(z, 0.2, 0.7, 1.2)
    for _ in range(int(10 * bowel)):
        centre = at(rng.uniform(-0.45, 0.45), rng.uniform(-0.35, 0.15))
        r = rng.uniform(0.04, 0.09)
        s.ellipse(centre, (r, r * rng.uniform(0.7, 1.0)), SOFT - 5, angle=rng.uniform(0, 180))
        s.ellipse(centre, (r * 0.7, r * 0.6), AIR if rng.random() < 0.4 else 10)
    s.ellipse(at(-0.02, 0.2), (0.045, 0.045), CONTRAST)  # aorta
    s.ellipse(at(-0.14, 0.17), (0.05, 0.04), CONTRAST - 60)  # inferior vena cava
    s.ellipse(at(0, 0.36), (0.1, 0.09), CORTICAL)  # vertebral body
    s.ellipse(at(0, 0.36), (0.085, 0.075), TRABECULAR)
    s.ellipse(at(0, 0.52), (0.025, 0.07), CORTICAL)  # spinous process
    s.ellipse(at(0, 0.46), (0.035, 0.03), SOFT)  # spinal canal
    pelvis = bump(z, 0.7, 1.0, 1.3)
    for side in (-1, 1):
        s.ellipse(at(side * 0.42, 0.2), (0.07 * pelvis, 0.22 * pelvis), CORTICAL, angle=side * 35)
        s.ellipse(at(side * 0.42, 0.2), (0.045 * pelvis, 0.18 * pelvis), TRABECULAR, angle=side * 35)
    noise = cv2.GaussianBlur(rng.normal(0, 14, (size, size)).astype(np.float32), (0, 0), 0.8)
    return np.clip(s.hu + noise, -1024, 3071).astype(np.int16)


def ct_dataset(hu: np.ndarray, *, seed: int, patient: int, series: int, index: int, count: int) -> Dataset:
    """A CT Image Storage DICOM object holding `hu` (stored as HU + 1024 with a -1024 intercept)."""

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[str(p) for p in (seed, *parts)])

    instance_uid = uid(patient, series, index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = uid(patient, "study")
    ds.SeriesInstanceUID = uid(patient, series)
    ds.Modality = "CT"
    ds.PatientID = str(patient)
    ds.PatientName = f"SYNTHETIC^{patient}"
    ds.SeriesNumber = series
    ds.InstanceNumber = index + 1
    thickness = 5.0
    ds.SliceThickness = thickness
    ds.SliceLocation = -index * thickness
    ds.ImagePositionPatient = [-250.0, -250.0, -index * thickness]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [500.0 / hu.shape[0], 500.0 / hu.shape[1]]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.ImageComments = f"FedGAN synthetic CT, slice {index + 1} of {count}"
    ds.PixelData = (hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
    return ds
