"""World geometry (origin, direction, affine) of unified_framework.io on real files.

NIfTI files are nibabel's shipped test data (``anatomical.nii`` is LAS and big-endian,
``reoriented_anat_moved.nii`` RAS, ``example4d.nii.gz`` oblique and 4D), DICOM files
pydicom's (CT_small, MR_small, rtdose); SimpleITK serves as an independent reader of
the same files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import zarr
from pydicom.data import get_testdata_file

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.io import Volume, read_volume, resample_to, write_volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
LAS = (
    NIBABEL_DATA / "anatomical.nii"
)  # big-endian int16, sform/qform code 2, origin (32, -40, -16) mm
RAS = NIBABEL_DATA / "reoriented_anat_moved.nii"  # big-endian float32, RAS, non-zero origin
SFORM_ONLY = NIBABEL_DATA / "standard.nii.gz"  # sform code 2, qform code 0


def float32_close(a, b):
    """Equal to single precision, relative to the largest entry (NIfTI headers are float32)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-7 * max(1.0, float(np.abs(b).max())))


def assert_same_nifti(out: Path, source: Path) -> None:
    written, original = nib.load(out), nib.load(source)
    float32_close(written.affine, original.affine)
    float32_close(written.header.get_sform(), original.header.get_sform())
    float32_close(written.header.get_qform(), original.header.get_qform())
    for code in ("sform_code", "qform_code"):
        assert int(written.header[code]) == int(original.header[code]), code
    data, expected = np.asarray(written.dataobj), np.asarray(original.dataobj)
    assert (data.dtype.kind, data.dtype.itemsize) == (expected.dtype.kind, expected.dtype.itemsize)
    assert data.dtype.isnative  # written in native order, whatever the source's
    np.testing.assert_array_equal(data, expected)
    assert data.tobytes() == expected.astype(data.dtype).tobytes()


# ----------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("source", [LAS, RAS, SFORM_ONLY], ids=["LAS", "RAS", "sform-only"])
@pytest.mark.parametrize("middle", ["vol.zarr", "vol.h5"])
def test_nifti_round_trip_through_zarr_and_hdf5_keeps_affine_codes_and_data(
    tmp_path, source, middle
):
    between = write_volume(tmp_path / middle, read_volume(source, lazy=True))
    back = write_volume(
        tmp_path / f"back{''.join(source.suffixes)}", read_volume(between, lazy=True)
    )
    assert_same_nifti(back, source)


def test_oblique_nifti_gz_round_trip(tmp_path):
    # The first volume of nibabel's oblique example4d.nii.gz (sform/qform code 1).
    image = nib.load(NIBABEL_DATA / "example4d.nii.gz")
    source = tmp_path / "oblique.nii.gz"
    nib.save(image.slicer[..., 0], source)
    volume = read_volume(source)
    assert volume.orientation == "LAS"
    assert not np.allclose(volume.direction, np.diag(np.diag(volume.direction)))  # really oblique
    back = write_volume(
        tmp_path / "back.nii.gz", read_volume(write_volume(tmp_path / "o.zarr", volume))
    )
    assert_same_nifti(back, source)


@pytest.mark.parametrize("name", ["example4d.nii.gz", "functional.nii"])
def test_4d_nifti_is_refused_with_a_clear_message(name):
    with pytest.raises(InputError, match=r"4D NIfTI with \d+ volumes .*expected one 3D volume"):
        read_volume(NIBABEL_DATA / name)


def test_worked_example_las_nifti():
    """docs/io.md, "World geometry": anatomical.nii and where voxel (0, 0, 0) lies."""
    volume = read_volume(LAS)
    assert volume.shape == (25, 41, 33) and volume.orientation == "LAS"
    assert volume.spacing == (2000.0, 2000.0, 2000.0)
    assert volume.origin == (-16000.0, 40000.0, -32000.0)
    expected = np.array(
        [[2000, 0, 0, -16000], [0, -2000, 0, 40000], [0, 0, 2000, -32000], [0, 0, 0, 1]], float
    )
    np.testing.assert_array_equal(volume.affine, expected)
    # Every voxel agrees with nibabel's RAS+ mm position: (x, y, z)_LPS = (-R, -A, S).
    image = nib.load(LAS)
    for k, j, i in [(0, 0, 0), (24, 40, 32), (3, 17, 9)]:
        r, a, s = (image.affine @ [i, j, k, 1])[:3]
        np.testing.assert_allclose(
            volume.affine @ [k, j, i, 1], [s * 1000, -a * 1000, -r * 1000, 1]
        )


@pytest.mark.parametrize("source", [LAS, RAS], ids=["LAS", "RAS"])
def test_geometry_agrees_with_simpleitk(source):
    itk = sitk.ReadImage(str(source))  # ITK: LPS millimetres, (x, y, z)
    volume = read_volume(source)
    np.testing.assert_allclose(np.array(volume.origin)[::-1] / 1000, itk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(np.array(volume.spacing)[::-1] / 1000, itk.GetSpacing(), rtol=1e-6)
    itk_direction = np.array(itk.GetDirection()).reshape(3, 3)  # rows x y z, columns index x y z
    np.testing.assert_allclose(volume.direction, itk_direction[::-1, ::-1], atol=1e-6)
    np.testing.assert_array_equal(volume.data, sitk.GetArrayFromImage(itk))


def test_tiff_is_identity_at_origin_and_nifti_output_matches_itk(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    path = write_volume(tmp_path / "stack.tif", data, (3.0, 2.0, 1.0))
    volume = read_volume(path)
    assert volume.origin == (0.0, 0.0, 0.0) and volume.orientation == "LPS"
    np.testing.assert_array_equal(volume.affine, np.diag([3.0, 2.0, 1.0, 1.0]))
    # The same grid in NIfTI: ITK (and so 3D Slicer) reads what ITK reads from the TIFF.
    out = write_volume(tmp_path / "stack.nii", volume)
    itk = sitk.ReadImage(str(out))
    np.testing.assert_allclose(itk.GetDirection(), np.eye(3).ravel(), atol=1e-7)
    np.testing.assert_allclose(itk.GetOrigin(), (0, 0, 0), atol=1e-9)


# ----------------------------------------------------------------------------- DICOM
DICOM_GEOMETRY = (
    "PixelSpacing",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


def assert_tags_close(written, original, keywords):
    for keyword in keywords:
        np.testing.assert_allclose(
            np.atleast_1d(np.asarray(written[keyword].value, dtype=float)),
            np.atleast_1d(np.asarray(original[keyword].value, dtype=float)),
            atol=1e-5,
            err_msg=keyword,
        )


def test_ct_single_file_round_trip_through_zarr(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    volume = read_volume(source)
    assert volume.origin == (
        -75699.997,
        -179035.797,
        -158135.803,
    )  # ImagePositionPatient, reversed, µm
    between = write_volume(tmp_path / "ct.zarr", volume)
    out = write_volume(tmp_path / "ct.dcm", read_volume(between), dtype="int16")
    written, original = pydicom.dcmread(out), pydicom.dcmread(source)
    assert_tags_close(written, original, DICOM_GEOMETRY)
    assert (written.Modality, written.SOPClassUID) == ("CT", original.SOPClassUID)
    assert written.FrameOfReferenceUID == original.FrameOfReferenceUID
    expected = original.pixel_array.astype(np.int32) * int(original.RescaleSlope) + int(
        original.RescaleIntercept
    )
    np.testing.assert_array_equal(written.pixel_array, expected)


def make_mr_series(folder: Path, slices: int = 4, step: float = 2.5) -> list[pydicom.Dataset]:
    """An oblique MR series from pydicom's MR_small.dcm, files named in reverse order."""
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    orientation = [0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0]
    normal = np.cross(orientation[:3], orientation[3:])
    folder.mkdir()
    written = []
    for k in range(slices):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [
            f"{v:.4f}" for v in np.array([-83.9063, -91.2, 6.6406]) + k * step * normal
        ]
        ds.InstanceNumber = k + 1
        ds.PixelData = (ds.pixel_array + k).astype(np.int16).tobytes()
        ds.save_as(folder / f"im{slices - k}.dcm")
        written.append(ds)
    return written


def test_mr_series_round_trip_through_zarr_keeps_positions_and_modality(tmp_path):
    originals = make_mr_series(tmp_path / "mr")
    volume = read_volume(tmp_path / "mr")
    assert volume.spacing == (2500.0, 312.5, 312.5)
    between = write_volume(tmp_path / "mr.zarr", volume)
    out = write_volume(tmp_path / "back", read_volume(between, lazy=True), format="dicom")
    written = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    assert len(written) == len(originals)
    for new, old in zip(written, originals):
        assert_tags_close(new, old, DICOM_GEOMETRY)
        assert (new.Modality, new.SOPClassUID) == ("MR", old.SOPClassUID)
        assert float(new.SpacingBetweenSlices) == 2.5
        assert (
            new.ScanningSequence == old.ScanningSequence
            and new.FrameOfReferenceUID == old.FrameOfReferenceUID
        )
        np.testing.assert_array_equal(new.pixel_array, old.pixel_array)


def test_mr_data_that_no_mr_class_holds_becomes_secondary_capture_not_ct(tmp_path):
    volume = read_volume(get_testdata_file("MR_small.dcm"))
    out = write_volume(
        tmp_path / "mr8.dcm",
        Volume(
            (volume.data > 500).astype(np.uint8),
            volume.spacing,
            volume.metadata,
            origin=volume.origin,
            direction=volume.direction,
        ),
    )
    written = pydicom.dcmread(out)
    assert (written.SOPClassUID, written.Modality) == ("1.2.840.10008.5.1.4.1.1.7", "MR")


def test_big_endian_dicom_reads_like_little_endian():
    little, big = (
        read_volume(get_testdata_file("MR_small.dcm")),
        read_volume(get_testdata_file("MR_small_bigendian.dcm")),
    )
    assert big.dtype.isnative and big.dtype == little.dtype
    np.testing.assert_array_equal(big.data, little.data)
    np.testing.assert_array_equal(big.affine, little.affine)


def test_rt_dose_multi_frame_takes_z_from_grid_frame_offsets(tmp_path):
    source = get_testdata_file("rtdose.dcm")
    header = pydicom.dcmread(source)
    volume = read_volume(source)
    assert volume.shape == (15, 10, 10)
    assert volume.spacing == (
        5000.0,
        10000.0,
        10000.0,
    )  # GridFrameOffsetVector steps 5 mm, not the 1 µm default
    assert volume.origin == tuple(float(v) * 1000 for v in header.ImagePositionPatient)[::-1]
    # RT dose has no single-frame storage class: Secondary Capture keeping the modality.
    scaled = Volume(
        (volume.data // 100).astype(np.uint16),
        volume.spacing,
        volume.metadata,
        origin=volume.origin,
        direction=volume.direction,
    )
    out = write_volume(tmp_path / "dose", scaled, format="dicom")
    files = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    assert {(f.SOPClassUID, f.Modality) for f in files} == {("1.2.840.10008.5.1.4.1.1.7", "RTDOSE")}
    offsets = [
        float(f.ImagePositionPatient[2]) - float(header.ImagePositionPatient[2]) for f in files
    ]
    np.testing.assert_allclose(offsets, [float(g) for g in header.GridFrameOffsetVector])


def test_enhanced_multi_frame_uses_per_frame_positions_and_sorts_frames(tmp_path):
    # pydicom ships no enhanced multi-frame image; this one is built like Enhanced MR Image Storage.
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    frames = np.stack([np.full((4, 5), k, np.uint16) for k in range(3)])
    z_positions = [20.0, 10.0, 15.0]  # stored out of order
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "MR", 3, 4, 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = (
        ["0.5", "0.25"],
        "4",
        "5",
    )
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = (
        Sequence([measures]),
        Sequence([orientation]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in z_positions:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [-10, 20, z]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)

    for lazy in (False, True):
        volume = read_volume(path, lazy=lazy)
        assert volume.spacing == (5000.0, 500.0, 250.0) and volume.origin == (
            10000.0,
            20000.0,
            -10000.0,
        )
        np.testing.assert_array_equal(
            np.asarray(volume.data)[:, 0, 0], [1, 2, 0]
        )  # sorted by position
    assert volume.metadata["dicom"]["SliceThickness"] == 4.0
    out = write_volume(tmp_path / "classic", volume.compute(), format="dicom")
    first = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert (first.SOPClassUID, first.Modality) == (
        "1.2.840.10008.5.1.4.1.1.4",
        "MR",
    )  # classic MR, not CT
    assert float(first.SliceThickness) == 4.0 and float(first.SpacingBetweenSlices) == 5.0


# ----------------------------------------------------------------------------- HDF5, Zarr
def test_nexus_axis_coordinates_give_the_origin(tmp_path):
    path = tmp_path / "beamline.nxs"
    with h5py.File(path, "w") as f:
        group = f.create_group("entry/data")
        group.attrs.update({"NX_class": "NXdata", "signal": "volume", "axes": ["z", "y", "x"]})
        group["volume"] = np.zeros((3, 4, 5), np.float32)
        for axis, start, n in zip("zyx", (1.5, -2.0, 0.25), (3, 4, 5)):
            group[axis] = start + np.arange(n) * 0.002
            group[axis].attrs["units"] = "mm"
    volume = read_volume(path)
    assert volume.origin == (1500.0, -2000.0, 250.0) and volume.spacing == (2.0, 2.0, 2.0)


def test_hdf5_and_zarr_store_origin_and_direction(tmp_path):
    direction = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # y and x swapped, one flipped
    volume = Volume(
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        (3.0, 2.0, 1.0),
        origin=(5.0, -6.0, 7.5),
        direction=direction,
    )
    for name in ("vol.h5", "vol.zarr"):
        back = read_volume(write_volume(tmp_path / name, volume))
        assert back.origin == volume.origin and back.spacing == volume.spacing
        np.testing.assert_array_equal(back.direction, direction)
    with h5py.File(tmp_path / "vol.h5", "r") as f:
        assert list(f["entry/data/data"].attrs["origin"]) == [5.0, -6.0, 7.5]
    assert zarr.open(str(tmp_path / "vol.zarr"), mode="r").attrs["direction"] == direction.tolist()


def test_ome_zarr_translation_is_the_origin(tmp_path):
    store = tmp_path / "ome.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_dataset("0", data=np.zeros((2, 3, 4), np.uint8))
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": "millimeter"} for a in "zyx"],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.004, 0.002, 0.001]},
                        {"type": "translation", "translation": [1.0, 0.5, -0.25]},
                    ],
                }
            ],
        }
    ]
    volume = read_volume(store)
    assert volume.spacing == (4.0, 2.0, 1.0) and volume.origin == (1000.0, 500.0, -250.0)


# ----------------------------------------------------------------------------- Volume, resampling, CLI
def test_volume_affine_is_derived_and_settable():
    volume = Volume(np.zeros((2, 3, 4)), (2.0, 1.0, 0.5))
    np.testing.assert_array_equal(volume.affine, np.diag([2.0, 1.0, 0.5, 1.0]))
    flipped = np.diag([2.0, -1.0, 0.5, 1.0])
    flipped[:3, 3] = (1, 2, 3)
    volume.affine = flipped
    assert volume.spacing == (2.0, 1.0, 0.5) and volume.origin == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(volume.affine, flipped)
    image = Volume(np.zeros((3, 4)), (1.0, 0.5))
    assert image.affine.shape == (4, 4) and image.spacing == (1.0, 0.5)
    with pytest.raises(InputError, match="direction columns have lengths"):
        Volume(np.zeros((2, 2, 2)), direction=np.eye(3) * 2)
    with pytest.raises(InputError, match="origin"):
        Volume(np.zeros((2, 2, 2)), origin=(0, 0))


def test_resample_to_undoes_a_known_shift_and_flip():
    rng = np.random.default_rng(0)
    reference = Volume(
        rng.integers(0, 1000, (6, 7, 8)).astype(np.uint16),
        (2.0, 1.0, 1.0),
        origin=(10.0, 20.0, 30.0),
    )
    # The same voxels stored with x reversed and the grid shifted by 2 voxels in y.
    moved_data = np.zeros((6, 9, 8), np.uint16)
    moved_data[:, 2:] = reference.data[:, :, ::-1]
    direction = np.diag([1.0, 1.0, -1.0])
    moved = Volume(moved_data, (2.0, 1.0, 1.0), origin=(10.0, 18.0, 37.0), direction=direction)
    for order in (0, 1, 3):
        result = resample_to(moved, reference, order=order)
        assert result.dtype == np.uint16 and result.origin == reference.origin
        np.testing.assert_array_equal(result.data, reference.data)
    # Half a voxel along z with linear interpolation: the mean of neighbouring slices.
    shifted = Volume(reference.data.astype(np.float32), reference.spacing, origin=(9.0, 20.0, 30.0))
    result = resample_to(shifted, reference, order=1, fill=-1)
    np.testing.assert_allclose(
        result.data[:-1], (reference.data[:-1] + reference.data[1:].astype(np.float32)) / 2
    )
    assert np.all(result.data[-1] == -1)  # outside the moved volume
    with pytest.raises(InputError, match="order 7"):
        resample_to(moved, reference, order=7)


def test_io_info_prints_orientation_origin_and_spacing(capsys):
    assert main(["io", "info", str(LAS), "--no-range"]) == 0
    out = capsys.readouterr().out
    assert "orientation LAS" in out and "dtype       int16 (big-endian)" in out
    assert "origin      -16000 40000 -32000 um" in out and "RAS x y z 32 -40 -16 mm" in out
    assert "voxel size  2000 x 2000 x 2000 um" in out
    assert main(["io", "info", str(RAS), "--no-range", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["orientation"] == "RAS"
        and report["dtype"] == "float32"
        and report["byte_order"] == "big-endian"
    )
    assert report["origin_um"] == [-27599.41, 47977.585, 35297.897]


def test_classical_labels_keep_the_input_grid(tmp_path):
    from unified_framework.classical import run_classical

    scan = tmp_path / "scan.nii.gz"
    write_volume(
        tmp_path / "scan.zarr", read_volume(LAS)
    )  # through Zarr: codes and geometry carried
    write_volume(scan, read_volume(tmp_path / "scan.zarr"))
    run_classical(scan, tmp_path / "labels.nii.gz", "multi-otsu", classes=2)
    float32_close(nib.load(tmp_path / "labels.nii.gz").affine, nib.load(LAS).affine)
    assert int(nib.load(tmp_path / "labels.nii.gz").header["sform_code"]) == 2
