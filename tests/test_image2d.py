"""2D colour, multi-channel and pyramidal images: reading, levels, lazy tiles, writing,
grey conversion, stain separation, the CLI, and grey-only consumers refusing colour.

Real files: scikit-image's shipped PNG/JPEG/TIFF data; pyramidal OME-TIFF (SubIFDs) and
an Aperio-SVS-like tiled pyramid are written by tifffile here, as scanners lay them out.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.io
import tifffile
from PIL import Image

from unified_framework.catalogue import thumbnail_slice
from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.image import separate_stains, to_grey
from unified_framework.io import Volume, read_volume, write_volume

DATA = Path(skimage.data.__file__).parent
SVS_HEADER = "Aperio Image Library v12.0.15 \r\n"


def png_pixel_size(path: Path) -> float:
    """µm per pixel from the PNG's pHYs chunk, parsed here without Pillow."""
    raw = path.read_bytes()
    at = raw.index(b"pHYs")
    per_unit_x, per_unit_y, unit = struct.unpack(">IIB", raw[at + 4 : at + 13])
    assert unit == 1 and per_unit_x == per_unit_y  # pixels per metre
    return 1e6 / per_unit_x


def make_rgb(shape=(600, 700), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape + (3,), dtype=np.uint8)


def write_ome_pyramid(
    path: Path, image: np.ndarray, pixel_um: float, levels: int = 3
) -> list[np.ndarray]:
    """Pyramidal OME-TIFF: level 0 with reduced levels in SubIFDs (as bioformats2raw/QuPath write)."""
    pyramid = [image[:: 2**i, :: 2**i] for i in range(levels)]
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            pyramid[0],
            subifds=levels - 1,
            tile=(128, 128),
            photometric="rgb",
            compression="zlib",
            metadata={
                "axes": "YXS",
                "PhysicalSizeX": pixel_um,
                "PhysicalSizeY": pixel_um,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeYUnit": "µm",
            },
        )
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    return pyramid


def write_svs(
    path: Path, image: np.ndarray, mpp: float, levels: int = 3, compression: str = "zlib"
) -> list[np.ndarray]:
    """Aperio SVS layout: tiled baseline, stripped thumbnail, tiled reduced levels, MPP in the description."""
    pyramid = [image[:: 2**i, :: 2**i] for i in range(levels)]
    height, width = image.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            pyramid[0],
            tile=(128, 128),
            photometric="rgb",
            compression=compression,
            metadata=None,
            description=f"{SVS_HEADER}{width}x{height} [0,0 {width}x{height}] (128x128) RGB|AppMag = 20|MPP = {mpp}",
        )
        tif.write(
            image[::16, ::16],
            photometric="rgb",
            metadata=None,
            description=f"{SVS_HEADER}thumbnail",
        )
        for level in pyramid[1:]:
            tif.write(
                level,
                tile=(128, 128),
                photometric="rgb",
                compression=compression,
                metadata=None,
                description=f"{SVS_HEADER}{width}x{height} -> {level.shape[1]}x{level.shape[0]}",
            )
    return pyramid


# ----------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize(
    "name, shape, axes",
    [
        ("astronaut.png", (512, 512, 3), "yxc"),
        ("logo.png", (500, 500, 4), "yxc"),  # RGBA
        ("chessboard_GRAY.png", (200, 200), "yx"),
        ("retina.jpg", (1411, 1411, 3), "yxc"),
        ("hubble_deep_field.jpg", (872, 1000, 3), "yxc"),
    ],
)
def test_shipped_png_and_jpeg_read_as_y_x_c(name, shape, axes):
    path = DATA / name
    volume = read_volume(path)
    assert volume.shape == shape and volume.axes == axes and volume.dtype == np.uint8
    assert volume.metadata["format"] == ("png" if name.endswith(".png") else "jpeg")
    # imageio (scikit-image's reader) decodes the same pixels
    np.testing.assert_array_equal(volume.data, skimage.io.imread(path))
    lazy = read_volume(path, lazy=True)
    assert lazy.lazy and lazy.axes == axes
    np.testing.assert_array_equal(lazy.data.compute(), volume.data)


def test_png_and_jpeg_pixel_size_comes_from_the_file():
    for name in ("astronaut.png", "logo.png", "chessboard_GRAY.png"):
        size = png_pixel_size(DATA / name)
        assert read_volume(DATA / name).spacing == pytest.approx((size, size), rel=1e-12), name
    # retina.jpg: JFIF density 150 dots per inch
    assert read_volume(DATA / "retina.jpg").spacing == pytest.approx((25400 / 150, 25400 / 150))
    # no pHYs: 1.0, as for every format without a pixel size
    assert read_volume(DATA / "color.png").spacing == (1.0, 1.0)


def test_rgba_png_with_exact_pixel_size(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path, dpi=(50800, 25400))  # pHYs 2000000 and 1000000 px/m
    volume = read_volume(path)
    assert volume.axes == "yxc" and volume.channels == 4 and volume.spacing == (1.0, 0.5)
    np.testing.assert_array_equal(volume.data, rgba)


def test_shipped_multipage_tiffs():
    # two grey pages: still a volume
    stack = read_volume(DATA / "multipage.tif")
    assert stack.axes == "zyx" and stack.shape == (2, 15, 10)
    # two planar RGB pages: neither a 2D colour image nor a grey volume
    with pytest.raises(
        InputError,
        match=r"multipage_rgb.tif: has colour/channel axes \(axes QSYX\); expected a 2D colour image",
    ):
        read_volume(DATA / "multipage_rgb.tif")


# ----------------------------------------------------------------------------- TIFF channels
def test_16_bit_multichannel_tiff(tmp_path):
    data = np.random.default_rng(2).integers(0, 65535, (50, 60, 5), dtype=np.uint16)
    contiguous = tmp_path / "samples.tif"
    tifffile.imwrite(
        contiguous,
        data,
        photometric="minisblack",
        planarconfig="contig",
        resolution=(1e4 / 0.3, 1e4 / 0.4),
        resolutionunit="CENTIMETER",
    )  # (x, y) pixels per cm
    planes = tmp_path / "planes.ome.tif"
    tifffile.imwrite(
        planes,
        np.moveaxis(data, -1, 0),
        metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4},
        tile=(32, 32),
    )
    for path in (contiguous, planes):
        for lazy in (False, True):
            volume = read_volume(path, lazy=lazy)
            assert (
                volume.axes == "yxc" and volume.dtype == np.uint16 and volume.shape == (50, 60, 5)
            )
            assert volume.spacing == pytest.approx((0.4, 0.3))
            np.testing.assert_array_equal(np.asarray(volume.compute().data), data)


@pytest.mark.parametrize("tile", [None, (64, 64)])
def test_big_endian_colour_tiff_reads_in_native_order(tmp_path, tile):
    data = np.random.default_rng(5).integers(0, 65535, (100, 90, 3), dtype=np.uint16)
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, data, byteorder=">", photometric="rgb", tile=tile)
    for lazy in (False, True):
        volume = read_volume(path, lazy=lazy)
        assert volume.dtype == np.dtype("uint16") and volume.dtype.isnative
        computed = np.asarray(volume.compute().data)
        assert computed.dtype.isnative
        np.testing.assert_array_equal(computed, data)


def test_jpeg_tiled_slide_and_lzw_tiff_decode_lazily_as_eagerly(tmp_path):
    # Most scanners' .svs hold JPEG tiles and Pillow writes LZW: both need imagecodecs.
    smooth = np.repeat(np.repeat(make_rgb((75, 88)), 8, axis=0), 8, axis=1)  # JPEG-friendly blocks
    path = tmp_path / "jpeg.svs"
    write_svs(path, smooth, 0.5, compression="jpeg")
    lazy, eager = read_volume(path, lazy=True), read_volume(path)
    assert lazy.lazy and lazy.axes == "yxc" and lazy.spacing == (0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(lazy.data.compute()), eager.data)
    # Lossy (chroma subsampling at the colour edges), but the same picture: a misplaced or
    # garbled tile would differ by about 85 grey levels on average.
    assert np.abs(eager.data.astype(int) - smooth).mean() < 16
    lzw = tmp_path / "lzw.tif"
    Image.fromarray(make_rgb((40, 50))).save(lzw, compression="tiff_lzw")
    np.testing.assert_array_equal(read_volume(lzw, lazy=True).data.compute(), make_rgb((40, 50)))


def test_compression_without_a_decoder_is_named(tmp_path, monkeypatch):
    # imagecodecs is a dependency; an environment without it (a stripped conda install)
    # is simulated by taking LZW out of tifffile's decoder table.
    from tifffile import TIFF

    without_imagecodecs = {
        1,
        8,
        32773,
        32946,
    }  # none, Deflate, PackBits, old Deflate: what zlib covers
    monkeypatch.setattr(type(TIFF), "DECOMPRESSORS", property(lambda self: without_imagecodecs))
    path = tmp_path / "lzw.tif"
    Image.fromarray(make_rgb((40, 50))).save(path, compression="tiff_lzw")
    with pytest.raises(
        InputError,
        match=r"lzw.tif: image data is LZW-compressed, which needs the 'imagecodecs' package",
    ):
        read_volume(path, lazy=True)


# ----------------------------------------------------------------------------- pyramids
def test_ome_tiff_pyramid_levels(tmp_path):
    path = tmp_path / "pyramid.ome.tif"
    pyramid = write_ome_pyramid(path, make_rgb(), 0.25)
    volume = read_volume(path)
    assert volume.metadata["levels"] == [
        {"shape": [600, 700, 3], "spacing_um": [0.25, 0.25]},
        {"shape": [300, 350, 3], "spacing_um": [0.5, 0.5]},
        {"shape": [150, 175, 3], "spacing_um": [1.0, 1.0]},
    ]
    assert volume.metadata["level"] == 0 and volume.spacing == (0.25, 0.25)
    np.testing.assert_array_equal(volume.data, pyramid[0])
    for level in (1, 2):
        for chosen in (read_volume(path, level=level), read_volume(f"{path}::{level}", lazy=True)):
            assert chosen.spacing == (0.25 * 2**level,) * 2 and chosen.metadata["level"] == level
            np.testing.assert_array_equal(np.asarray(chosen.compute().data), pyramid[level])
    with pytest.raises(InputError, match=r"pyramid.ome.tif: no pyramid level 3; expected 0..2"):
        read_volume(path, level=3)


def test_grey_pyramid_is_a_y_x_image_with_levels(tmp_path):
    path = tmp_path / "grey.ome.tif"
    grey = np.random.default_rng(4).integers(0, 4096, (300, 260), dtype=np.uint16)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            grey,
            subifds=1,
            tile=(64, 64),
            metadata={"axes": "YX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0},
        )
        tif.write(grey[::2, ::2], subfiletype=1, tile=(64, 64))
    volume = read_volume(path, lazy=True, level=1)
    assert (
        volume.axes == "yx" and volume.data.chunksize == (64, 64) and volume.spacing == (4.0, 4.0)
    )
    np.testing.assert_array_equal(volume.data.compute(), grey[::2, ::2])
    assert read_volume(path, grey=True).shape == (300, 260)


def test_svs_pyramid_and_mpp(tmp_path):
    path = tmp_path / "slide.svs"
    pyramid = write_svs(path, make_rgb((520, 650)), 0.499)
    volume = read_volume(path, lazy=True)
    assert volume.metadata["format"] == "tiff" and volume.metadata["svs"]["MPP"] == 0.499
    assert volume.spacing == (0.499, 0.499)
    # the thumbnail page is no pyramid level
    assert [lv["shape"] for lv in volume.metadata["levels"]] == [
        [520, 650, 3],
        [260, 325, 3],
        [130, 163, 3],
    ]
    assert volume.metadata["levels"][2]["spacing_um"] == pytest.approx(
        [0.499 * 4, 0.499 * 650 / 163]
    )
    level2 = read_volume(path, level=2)
    np.testing.assert_array_equal(level2.data, pyramid[2])


def test_lazy_level_reads_only_the_tiles_it_needs(tmp_path):
    """A region of a 8192² RGB level (192 MiB decoded) costs a few tiles of memory."""
    path = tmp_path / "big.svs"
    tile, n = 256, 32

    def tiles():
        for index in range(n * n):
            yield np.full((tile, tile, 3), index % 251, np.uint8)

    with tifffile.TiffWriter(path) as tif:
        tif.write(
            tiles(),
            shape=(n * tile, n * tile, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="rgb",
            compression="zlib",
            metadata=None,
            description=f"{SVS_HEADER}big|MPP = 0.25",
        )
    volume = read_volume(path, lazy=True)
    assert volume.shape == (8192, 8192, 3) and volume.data.chunksize == (tile, tile, 3)
    tracemalloc.start()
    try:
        region = volume.data[300:700, 5000:5300].compute()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    expected = np.empty((400, 300, 3), np.uint8)
    for y in range(300, 700):
        for x in (5000, 5299):
            expected[y - 300, x - 5000] = ((y // tile) * n + x // tile) % 251
    np.testing.assert_array_equal(region[:, [0, -1]], expected[:, [0, -1]])


def test_corrupt_tile_on_the_lazy_path_is_one_line(tmp_path):
    path = tmp_path / "slide.svs"
    write_svs(path, make_rgb((256, 256)), 0.5, levels=1)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[1]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)  # garbage in the zlib stream of tile 1
    volume = read_volume(path, lazy=True)
    np.asarray(volume.data[:128, :128].compute())  # tile 0 is intact
    with pytest.raises(InputError) as error:
        volume.data[:128, 128:].compute()
    assert str(error.value).startswith(f"{path}: cannot read TIFF file") and "\n" not in str(
        error.value
    )


def test_level_errors(tmp_path):
    write_volume(tmp_path / "vol.nii", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match="a NIfTI file has no pyramid levels"):
        read_volume(tmp_path / "vol.nii", level=1)
    write_volume(tmp_path / "vol.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match="pyramid levels apply to 2D images"):
        read_volume(tmp_path / "vol.tif", level=0)
    with pytest.raises(InputError, match=r"has no datasets \(got '/entry'\)"):
        read_volume(f"{tmp_path / 'vol.tif'}::/entry")


def test_ome_zarr_level(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    data = np.arange(16 * 20, dtype=np.uint16).reshape(16, 20)
    for index, scale in enumerate((1, 2)):
        group.create_dataset(str(index), data=data[::scale, ::scale])
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": "y", "unit": "micrometer"}, {"name": "x", "unit": "micrometer"}],
            "datasets": [
                {
                    "path": str(i),
                    "coordinateTransformations": [{"type": "scale", "scale": [0.5 * 2**i] * 2}],
                }
                for i in range(2)
            ],
        }
    ]
    level1 = read_volume(tmp_path / "ome.zarr", level=1)
    np.testing.assert_array_equal(level1.data, data[::2, ::2])
    assert level1.spacing == (1.0, 1.0)
    assert level1.metadata["levels"] == [
        {"shape": [16, 20], "spacing_um": [0.5, 0.5]},
        {"shape": [8, 10], "spacing_um": [1.0, 1.0]},
    ]
    with pytest.raises(InputError, match="no pyramid level 2; expected 0..1"):
        read_volume(tmp_path / "ome.zarr", level=2)


# ----------------------------------------------------------------------------- writing
@pytest.mark.parametrize("name", ["rgb.tif", "rgb.ome.tif", "rgb.zarr"])
def test_colour_round_trip_keeps_channels_and_pixel_size(tmp_path, name):
    for source in (
        Volume(make_rgb((300, 400)), (0.25, 0.5), axes="yxc"),
        Volume(
            np.random.default_rng(3).integers(0, 65535, (300, 400, 5), dtype=np.uint16),
            (0.65, 0.65),
            axes="yxc",
        ),
    ):
        path = write_volume(tmp_path / name, Volume(source.data, source.spacing, axes="yxc"))
        back = read_volume(path, lazy=True)
        assert back.axes == "yxc" and back.dtype == source.dtype and back.spacing == source.spacing
        np.testing.assert_array_equal(back.data.compute(), source.data)
    if name == "rgb.ome.tif":
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_ome and 'PhysicalSizeX="0.65"' in tif.ome_metadata


def test_lazy_colour_conversion_is_written_tile_by_tile(tmp_path):
    source = tmp_path / "slide.svs"
    pyramid = write_svs(source, make_rgb((520, 650)), 0.5)
    out = write_volume(tmp_path / "copy.ome.tif", read_volume(source, lazy=True))
    with tifffile.TiffFile(out) as tif:
        assert tif.pages.first.is_tiled
    np.testing.assert_array_equal(read_volume(out).data, pyramid[0])


def test_colour_refused_by_formats_without_channels(tmp_path):
    rgb = Volume(make_rgb((8, 9)), axes="yxc")
    for name in ("rgb.h5", "rgb.nii.gz", "slices"):
        with pytest.raises(
            InputError,
            match="cannot hold a colour/multi-channel image here; expected an output .tif, .ome.tif or .zarr",
        ):
            write_volume(tmp_path / name, rgb)
        assert not (tmp_path / name).exists()
    with pytest.raises(InputError, match="PNG images are read, not written"):
        write_volume(tmp_path / "out.png", rgb)


def test_volume_axes_marker():
    assert Volume(np.zeros((2, 3, 4))).axes == "zyx"  # a plain 3D array stays a volume
    assert Volume(np.zeros((3, 4))).axes == "yx"
    rgb = Volume(np.zeros((3, 4, 3)), axes="yxc")
    assert rgb.spacing == (1.0, 1.0) and rgb.spatial_shape == (3, 4) and rgb.channels == 3
    with pytest.raises(InputError, match="axes 'xyz' do not fit 3D data"):
        Volume(np.zeros((2, 3, 4)), axes="xyz")
    with pytest.raises(InputError, match="expected 2"):
        Volume(np.zeros((3, 4, 3)), spacing=(1, 1, 1), axes="yxc")


# ----------------------------------------------------------------------------- colour operations
def test_to_grey_and_stain_separation_match_scikit_image():
    ihc = read_volume(DATA / "ihc.png")
    grey = to_grey(ihc)
    assert grey.axes == "yx" and grey.spacing == ihc.spacing and grey.dtype == np.float32
    np.testing.assert_allclose(grey.data, skimage.color.rgb2gray(ihc.data), rtol=1e-6)
    hed = separate_stains(ihc, "hed")
    assert (
        hed.axes == "yxc"
        and hed.spacing == ihc.spacing
        and hed.metadata["channels"] == ["hematoxylin", "eosin", "DAB"]
    )
    np.testing.assert_allclose(hed.data, skimage.color.rgb2hed(ihc.data), rtol=1e-5, atol=1e-6)
    lazy = read_volume(DATA / "ihc.png", lazy=True)
    np.testing.assert_allclose(separate_stains(lazy, "hed").data.compute(), hed.data)
    np.testing.assert_allclose(to_grey(lazy).data.compute(), grey.data)


def test_to_grey_channels_and_errors():
    rgba = read_volume(DATA / "logo.png")
    np.testing.assert_allclose(
        to_grey(rgba).data, skimage.color.rgb2gray(rgba.data[..., :3]), rtol=1e-6
    )  # alpha ignored
    five = Volume(np.arange(2 * 3 * 5, dtype=np.uint16).reshape(2, 3, 5), (0.5, 0.5), axes="yxc")
    picked = to_grey(five, channel=3)
    assert picked.dtype == np.uint16 and picked.axes == "yx"
    np.testing.assert_array_equal(picked.data, five.data[..., 3])
    with pytest.raises(InputError, match="has 5 channels; expected RGB"):
        to_grey(five)
    with pytest.raises(InputError, match="no channel 5; expected 0..4"):
        to_grey(five, channel=5)
    with pytest.raises(InputError, match="expected an RGB or RGBA image for stain separation"):
        separate_stains(five, "hed")
    with pytest.raises(InputError, match="stains 'xyz' unknown"):
        separate_stains(rgba, "xyz")
    grey = Volume(np.zeros((3, 4)))
    assert to_grey(grey) is grey


# ----------------------------------------------------------------------------- CLI
def test_cli_info_lists_levels(tmp_path, capsys):
    path = tmp_path / "slide.svs"
    write_svs(path, make_rgb((520, 650)), 0.5)
    assert main(["io", "info", str(path), "--no-range"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "shape       520 x 650 x 3  (y, x, c)" in lines and "voxel size  0.5 x 0.5 um" in lines
    assert "levels      0: 520 x 650 x 3, pixel 0.5 x 0.5 um  <- read" in lines
    assert "            2: 130 x 163 x 3, pixel 2 x 1.99387 um" in lines
    assert main(["io", "info", str(path), "--level", "1", "--json", "--no-range"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["axes"] == "yxc" and report["shape"] == [260, 325, 3] and report["level"] == 1
    assert len(report["levels"]) == 3 and report["spacing_um"] == [1.0, 1.0]


def test_cli_convert_colour(tmp_path, capsys):
    slide = tmp_path / "slide.svs"
    pyramid = write_svs(slide, make_rgb((520, 650)), 0.5)
    assert main(["io", "convert", f"{slide}::1", str(tmp_path / "level1.zarr")]) == 0
    assert capsys.readouterr().out.startswith(
        f"wrote {tmp_path / 'level1.zarr'}: 260x325x3 (y, x, c) uint8, voxel size 1 x 1 um"
    )
    np.testing.assert_array_equal(read_volume(tmp_path / "level1.zarr").data, pyramid[1])
    assert (
        main(["io", "convert", str(slide), str(tmp_path / "grey.nii.gz"), "--level", "2", "--grey"])
        == 0
    )
    grey = read_volume(tmp_path / "grey.nii.gz")
    assert grey.shape == (130, 163) and grey.dtype == np.float32
    np.testing.assert_allclose(grey.data, skimage.color.rgb2gray(pyramid[2]), rtol=1e-6)
    assert grey.spacing == pytest.approx(
        (2.0, 0.5 * 650 / 163), rel=1e-6
    )  # NIfTI keeps float32 pixdim
    assert (
        main(
            [
                "io",
                "convert",
                str(DATA / "ihc.png"),
                str(tmp_path / "hed.ome.tif"),
                "--stains",
                "hed",
            ]
        )
        == 0
    )
    hed = read_volume(tmp_path / "hed.ome.tif")
    assert (
        hed.axes == "yxc"
        and hed.dtype == np.float32
        and hed.spacing == read_volume(DATA / "ihc.png").spacing
    )
    assert (
        main(["io", "convert", str(DATA / "ihc.png"), str(tmp_path / "red.tif"), "--channel", "0"])
        == 0
    )
    np.testing.assert_array_equal(
        read_volume(tmp_path / "red.tif").data, skimage.data.immunohistochemistry()[..., 0]
    )


def test_cli_convert_colour_to_a_grey_only_format_says_what_to_do(tmp_path, capsys):
    assert main(["io", "convert", str(DATA / "astronaut.png"), str(tmp_path / "a.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdlma: error: ") and err.count("\n") == 1 and "--grey" in err
    assert not (tmp_path / "a.h5").exists()


# ----------------------------------------------------------------------------- grey-only consumers
def test_score_refuses_a_colour_image(tmp_path, capsys):
    labels = tmp_path / "labels.tif"
    write_volume(labels, np.zeros((512, 512), np.uint8))
    status = main(["score", str(DATA / "astronaut.png"), str(labels)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert (
        "astronaut.png: is a colour/multi-channel image (512x512 pixels, 3 channels)" in err
        and "mdlma io convert IN OUT --grey" in err
    )


def test_classical_segmentation_refuses_a_colour_image(tmp_path, capsys):
    status = main(
        ["segment", "classical", str(DATA / "ihc.png"), "-o", str(tmp_path / "labels.tif")]
    )
    err = capsys.readouterr().err
    assert status == 2 and "ihc.png: is a colour/multi-channel image" in err and "--grey" in err
    assert not (tmp_path / "labels.tif").exists()
    # the documented way: convert to grey first, then segment
    assert (
        main(["io", "convert", str(DATA / "ihc.png"), str(tmp_path / "ihc_grey.tif"), "--grey"])
        == 0
    )
    assert (
        main(
            [
                "segment",
                "classical",
                str(tmp_path / "ihc_grey.tif"),
                "-o",
                str(tmp_path / "labels.tif"),
            ]
        )
        == 0
    )
    assert read_volume(tmp_path / "labels.tif").shape == (512, 512)


def test_sun_refuses_a_colour_image(tmp_path, capsys):
    # SUN needs a 3D volume: a 2D colour image fails that check first ...
    status = main(["sun", "plan", str(DATA / "astronaut.png")])
    err = capsys.readouterr().err
    assert (
        status == 2
        and "astronaut.png: has 2 dimensions (shape 512x512); expected a 3D volume" in err
    )
    # ... also from Zarr, whose 20x30x3 array would pass as (z, y, x) without its axes marker
    rgb = tmp_path / "rgb.zarr"
    write_volume(rgb, Volume(make_rgb((20, 30)), axes="yxc"))
    assert main(["sun", "plan", str(rgb)]) == 2
    assert (
        "rgb.zarr: has 2 dimensions (shape 20x30); expected a 3D volume" in capsys.readouterr().err
    )


def test_grey_only_reading_refuses_a_slide_before_reading_its_pixels(tmp_path, monkeypatch):
    path = tmp_path / "slide.svs"
    write_svs(path, make_rgb((520, 650)), 0.5)

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_pixels)
    with pytest.raises(InputError, match="slide.svs: is a colour/multi-channel image"):
        read_volume(path, grey=True)


def test_thumbnail_of_a_slide_uses_a_small_level(tmp_path):
    path = tmp_path / "slide.svs"
    pyramid = write_svs(path, make_rgb((520, 650)), 0.5)
    thumb = thumbnail_slice(str(path), max_size=160)
    # the coarsest level at least 160 wide is level 2 (163 wide), subsampled by 2
    assert thumb.dtype == np.uint8 and thumb.shape == pyramid[2][::2, ::2].shape[:2]
