"""Procedural CT: real DICOM files in the RSNA layout with plausible Hounsfield units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale


def test_series_layout_and_dicom_header(ct_set: Path) -> None:
    files = sorted(ct_set.glob("*/*/*.dcm"))
    assert len(files) == 12
    assert len({f.parent for f in files}) == 2  # one series per patient
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT"
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert (ds.Rows, ds.Columns) == (128, 128)
    assert ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1
    assert ds.PatientID == files[0].parent.parent.name
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert len(uids) == 12


def test_hounsfield_units_are_anatomical(ct_set: Path) -> None:
    ds = pydicom.dcmread(sorted(ct_set.glob("*/*/3.dcm"))[0])
    hu = apply_rescale(ds.pixel_array, ds)
    assert np.percentile(hu, 5) < -900  # air around the body
    assert hu.max() > 500  # cortical bone of the spine
    soft = ((hu > -20) & (hu < 100)).mean()
    fat = ((hu > -150) & (hu < -50)).mean()
    assert soft > 0.05 and fat > 0.03


def test_organs_change_along_the_body(ct_set: Path) -> None:
    """The top slice cuts the lung bases (air-density tissue inside the body); the bottom does not."""
    series = sorted(ct_set.glob("*/*"))[0]
    top = apply_rescale(pydicom.dcmread(series / "1.dcm").pixel_array, pydicom.dcmread(series / "1.dcm"))
    bottom = apply_rescale(pydicom.dcmread(series / "6.dcm").pixel_array, pydicom.dcmread(series / "6.dcm"))
    centre = (slice(32, 96), slice(16, 112))
    lung_like = lambda hu: ((hu[centre] > -950) & (hu[centre] < -700)).mean()  # noqa: E731
    assert lung_like(top) > lung_like(bottom) + 0.02
