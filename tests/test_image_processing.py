"""MavorsImageProcessor: dynamic resolution (SPEC §3.1), eq. 8 tiling (§3.2), RGB conversion, packing (§7)."""

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor

import transformers_mavors  # noqa: F401  (registers the Auto classes)
from transformers_mavors import MavorsImageProcessor
from transformers_mavors.image_processing_mavors import get_dynamic_resolution, get_slice_grid


@pytest.fixture
def processor():
    return MavorsImageProcessor(image_size=56, patch_size=14)


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- dynamic resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1280, 720, (280, 504)),  # 16:9 at SigLIP-so400m-384: a 20x36 patch grid
        (640, 480, (336, 448)),  # 4:3
        (384, 384, (392, 392)),  # 384 rounds to the nearest multiple of 28
        (10, 10, (392, 392)),  # small images are scaled up to the ViT's pixel budget
        (2000, 10, (28, 5432)),  # 200:1, the most elongated accepted: a side is at least one patch pair
    ],
)
def test_dynamic_resolution_matches_pretraining_pixel_count(width, height, expected):
    assert get_dynamic_resolution(width, height, image_size=384, patch_size=14) == expected


def test_dynamic_resolution_sides_are_even_patch_multiples_near_the_pixel_budget():
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(1, 5000, size=2))
        if max(width, height) / min(width, height) > 200:
            continue
        out_h, out_w = get_dynamic_resolution(width, height, image_size=384, patch_size=14)
        assert out_h % 28 == 0 and out_w % 28 == 0 and out_h >= 28 and out_w >= 28
        # each side is within half a rounding unit of the ideal R_v * sqrt(aspect)
        assert abs(out_w - 384 * (width / height) ** 0.5) <= 14 or out_w == 28
        assert abs(out_h - 384 * (height / width) ** 0.5) <= 14 or out_h == 28


# --- tiling (eq. 8) ---------------------------------------------------------------------------------


def test_224x112_at_rv56_gives_thumbnail_plus_4x2_slices(processor):
    out = processor(random_image(112, 224))
    # N_s = floor(224*112 / 56^2) = 8; (4 columns, 2 rows) matches the 2:1 aspect exactly
    assert out["image_slice_grid"].tolist() == [[2, 4]]
    grids = out["image_grid_thw"].tolist()
    assert grids[0] == [1, 2, 6]  # thumbnail 84x28
    assert grids[1:] == [[1, 4, 4]] * 8  # eight 56x56 slices
    assert out["pixel_values"].shape == (2 * 6 + 8 * 16, 3 * 14 * 14)
    assert out["pixel_values"].dtype == torch.float32


@pytest.mark.parametrize(
    ("width", "height", "max_slices", "expected"),
    [
        (80, 80, 9, (1, 2)),  # N_s = 2: (1,2) and (2,1) tie on |log ratio|, the smaller m wins
        (60, 60, 9, None),  # N_s = 1: no tiling
        (1000, 1000, 9, (3, 3)),  # N_s = 318 is clamped to max_slices = 9
        (1000, 1000, 4, (2, 2)),  # clamped to 4: candidates 3 and 4 slices, 2x2 is square
        (1000, 1000, 1, None),  # max_slices = 1 disables tiling
        (168, 56, 9, (3, 1)),  # N_s = 3, 3:1 -> three columns, one row (|log| = 0)
        (300, 100, 9, (4, 2)),  # N_s = 9: only 8 and 9 slices are candidates; 4x2 (2:1) is nearest to 3:1
    ],
)
def test_slice_grid_follows_eq8_with_cap_and_tie_breaks(width, height, max_slices, expected):
    assert get_slice_grid(width, height, image_size=56, max_slices=max_slices) == expected


def test_max_slices_one_gives_a_single_piece(processor):
    out = processor(random_image(112, 224), max_slices=1)
    assert out["image_slice_grid"].tolist() == [[1, 1]]
    assert out["image_grid_thw"].tolist() == [[1, 2, 6]]


def test_slices_are_the_image_regions_in_row_major_order():
    # Each of the 2x4 regions is one flat colour; slice k must carry the colour of region k (row-major).
    colours = [(30 * k, 255 - 30 * k, (70 * k) % 256) for k in range(8)]
    image = np.zeros((112, 224, 3), dtype=np.uint8)
    for k, colour in enumerate(colours):
        row, column = divmod(k, 4)
        image[row * 56 : (row + 1) * 56, column * 56 : (column + 1) * 56] = colour
    processor = MavorsImageProcessor(image_size=56, do_normalize=False)
    out = processor(PIL.Image.fromarray(image))
    pieces = out["pixel_values"][12:].view(8, 16, 3, 14, 14)  # skip the 12 thumbnail patches
    means = (pieces.mean(dim=(1, 3, 4)) * 255).round()
    assert means.tolist() == [list(map(float, colour)) for colour in colours]


# --- packing ----------------------------------------------------------------------------------------------


def test_patches_are_row_major_with_channel_row_column_values(processor):
    # 56x56 needs no resize (dynamic resolution of 56 at R_v=56 is 56), so pixels map 1:1 to patch rows.
    pixels = np.random.default_rng(1).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    out = processor(pixels)
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]]
    normalized = (torch.from_numpy(pixels).float() / 255 - 0.5) / 0.5  # (H, W, C)
    for row in range(16):
        y, x = divmod(row, 4)
        patch = normalized[y * 14 : (y + 1) * 14, x * 14 : (x + 1) * 14].permute(2, 0, 1)  # (C, p, p)
        torch.testing.assert_close(out["pixel_values"][row], patch.reshape(-1), atol=1e-6, rtol=0)


def test_batch_concatenates_pieces_in_image_order(processor):
    small, large = random_image(40, 40, seed=1), random_image(112, 224, seed=2)
    batch = processor([[small], [large, small]])
    alone = [processor(image)["pixel_values"] for image in (small, large, small)]
    torch.testing.assert_close(batch["pixel_values"], torch.cat(alone))
    assert batch["image_slice_grid"].tolist() == [[1, 1], [2, 4], [1, 1]]
    assert len(batch["image_grid_thw"]) == 1 + 9 + 1


# --- input types and RGB conversion -----------------------------------------------------------------------


def test_pil_numpy_torch_and_file_inputs_give_identical_pixels(processor, tmp_path):
    array = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    PIL.Image.fromarray(array).save(path)
    reference = processor(PIL.Image.fromarray(array))["pixel_values"]
    for variant in (
        array,
        np.moveaxis(array, -1, 0),  # (C, H, W)
        torch.from_numpy(array),
        torch.from_numpy(array).permute(2, 0, 1).float() / 255,  # float in [0, 1]
        array.astype(np.uint16) * 257,  # 16-bit
        str(path),
        path,
        path.read_bytes(),
        io.BytesIO(path.read_bytes()),
    ):
        torch.testing.assert_close(processor(variant)["pixel_values"], reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PIL.Image.new("L", (30, 30), 255),
        lambda: PIL.Image.new("1", (30, 30), 1),
        lambda: PIL.Image.new("RGBA", (30, 30), (0, 0, 0, 0)),  # transparent -> composited on white
        lambda: PIL.Image.new("LA", (30, 30), (0, 0)),
        lambda: PIL.Image.new("CMYK", (30, 30), (0, 0, 0, 0)),
        lambda: PIL.Image.new("I;16", (30, 30), 65535),
        lambda: PIL.Image.new("P", (30, 30), 0).convert("RGB").convert("P"),
        lambda: np.full((30, 30), 255, dtype=np.uint8),
        lambda: np.full((30, 30, 4), (255, 255, 255, 255), dtype=np.uint8),
        lambda: np.ones((30, 30, 1), dtype=bool),
    ],
)
def test_white_in_any_mode_becomes_white_rgb(processor, make):
    image = make()
    if isinstance(image, PIL.Image.Image) and image.mode == "P":
        image.putpalette([255, 255, 255] * 256)
    pixel_values = processor(image)["pixel_values"]
    assert pixel_values.shape[1] == 3 * 14 * 14
    torch.testing.assert_close(pixel_values, torch.ones_like(pixel_values))  # (1 - 0.5) / 0.5


def test_exif_orientation_is_applied(processor):
    wide = random_image(20, 80)  # stored 80 wide, 20 high
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    wide.save(buffer, format="JPEG", exif=exif)
    out = processor(buffer.getvalue())
    _, height, width = out["image_grid_thw"][0].tolist()
    assert height > width  # displayed upright: 20 wide, 80 high


# --- bad input ---------------------------------------------------------------------------------------------


def _png_header_only(width, height):
    """A PNG whose header claims `width x height` but holds almost no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_oversized_image_is_refused_from_its_header(processor, tmp_path):
    # 12000^2 = 1.44e8 pixels: above our 2**27 limit, below PIL's own decompression-bomb error; 2e5^2 above both.
    for side in (12_000, 200_000):
        path = tmp_path / f"huge{side}.png"
        path.write_bytes(_png_header_only(side, side))  # decoding would fail: there is no pixel data
        with pytest.raises(ValueError, match="max_image_pixels"):
            processor(str(path))
    with pytest.raises(ValueError, match="max_image_pixels"):
        processor(random_image(100, 100), max_image_pixels=5000)


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((0, 10, 3), dtype=np.uint8), ValueError, "zero size"),
        (np.zeros((2, 500, 3), dtype=np.uint8), ValueError, "aspect ratio"),  # 250:1
        (np.zeros((10, 10, 3), dtype=np.complex64), TypeError, "dtype"),
        (np.zeros((10, 10, 3), dtype=np.int64), TypeError, "dtype"),
        (np.zeros((10, 10, 5), dtype=np.uint8), ValueError, "shape"),
        (42, TypeError, "unsupported image input"),
        ("/nonexistent/image.png", FileNotFoundError, "does not exist"),
    ],
)
def test_bad_images_raise_typed_errors_naming_the_input(processor, image, error, message):
    with pytest.raises(error, match=message):
        processor(image)


def test_empty_corrupt_and_truncated_files_raise_value_errors(processor, tmp_path):
    empty, garbage, truncated = tmp_path / "empty.png", tmp_path / "garbage.png", tmp_path / "truncated.png"
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    buffer = io.BytesIO()
    random_image(200, 200).save(buffer, format="PNG")
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path, message in ((empty, "empty"), (garbage, "cannot be read"), (truncated, "truncated")):
        with pytest.raises(ValueError, match=message) as info:
            processor(str(path))
        assert path.name in str(info.value)


def test_a_bad_image_in_a_batch_fails_the_whole_call(processor):
    with pytest.raises(ValueError, match="aspect ratio"):
        processor([random_image(50, 50), np.zeros((1, 300, 3), dtype=np.uint8)])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_slices": 0}, ValueError),
        ({"max_slices": "nine"}, TypeError),
        ({"image_std": [0.5, 0.0, 0.5]}, ValueError),
    ],
)
def test_bad_options_raise_typed_errors(processor, kwargs, error):
    with pytest.raises(error):
        processor(random_image(30, 30), **kwargs)


def test_unknown_option_is_a_type_error(processor):
    with pytest.raises(TypeError, match="max_slice"):
        processor(random_image(30, 30), max_slice=3)


# --- save / load ----------------------------------------------------------------------------------------------


def test_save_and_auto_load_roundtrip(tmp_path):
    processor = MavorsImageProcessor(image_size=56, max_slices=4, image_mean=[0.1, 0.2, 0.3])
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MavorsImageProcessor
    assert (loaded.image_size, loaded.max_slices, tuple(loaded.image_mean)) == (56, 4, (0.1, 0.2, 0.3))
    image = random_image(150, 130)
    torch.testing.assert_close(loaded(image)["pixel_values"], processor(image)["pixel_values"])


def test_the_work_lives_in_pil_backends_preprocess_hook(processor):
    # PilBackend's pipeline: `process_image` reads each input to (3, H, W) uint8 RGB, `_preprocess` does the rest
    picture = random_image(150, 300)
    prepared = processor.process_image(picture)
    assert prepared.shape == (3, 150, 300) and prepared.dtype == np.uint8
    options = {key: getattr(processor, key) for key in processor._valid_kwargs_names}
    direct = processor._preprocess([prepared], **options)
    through_call = processor(picture)
    for key in ("pixel_values", "image_grid_thw", "image_slice_grid"):
        torch.testing.assert_close(direct[key], through_call[key], atol=0, rtol=0)
