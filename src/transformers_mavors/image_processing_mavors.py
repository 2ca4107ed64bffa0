"""Image processor of Mavors: dynamic resolution, sub-image tiling (paper eq. 8) and patch packing.

An image becomes a list of *pieces*: the thumbnail (the whole image) and, when the image holds more than
two ViT-pretraining images' worth of pixels, m x n sub-images. Every piece is resized to the pixel count of
the ViT's pretraining images at its own aspect ratio (SPEC §3.1), normalised with SigLIP's mean/std and cut
into p x p patches. Pieces are returned packed (SPEC §7):

- `pixel_values`: (sum of patches over pieces, 3 * p * p) float32; one row per patch, values ordered
  (C, p, p); rows in row-major order of each piece's patch grid; pieces in text order (per image: the
  thumbnail, then the sub-images row by row).
- `image_grid_thw`: (pieces, 3) long, `(1, h_patches, w_patches)` per piece; both sides even.
- `image_slice_grid`: (images, 2) long, `(rows, columns)` of each image's sub-image grid, `(1, 1)` for an
  image that is not tiled. The processor uses it to lay the pieces out in the text; the model does not.

The helpers at module level (`get_dynamic_resolution`, `get_slice_grid`, `to_rgb_array`, ...) are shared with
the video processor, so a frame and an image of the same size always get the same resolution.
"""

import io
import math
import os
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import logging

logger = logging.get_logger(__name__)

# SigLIP's normalisation (google/siglip-so400m-patch14-384 preprocessor_config.json).
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

# Aspect ratios beyond this are rejected (SPEC §3.1): such an image has a side shorter than one patch
# pair at the ViT's pixel budget, so nothing of it would survive resizing.
MAX_ASPECT_RATIO = 200

# Images (and video frames) with more pixels are refused before their pixels are decoded. 2**27 pixels
# (about 11585 x 11585, 384 MiB as 8-bit RGB) is above any camera sensor and above PIL's own
# decompression-bomb warning level, yet an image this size still decodes in a few seconds on a laptop.
DEFAULT_MAX_IMAGE_PIXELS = 2**27

# Input dtypes understood by `to_rgb_array`, and the value range each is taken to have.
_ACCEPTED_DTYPES = "uint8 (0-255), uint16 (0-65535), bool, float16/float32/float64 (0-1)"


class MavorsImagesKwargs(ImagesKwargs, total=False):
    """Keyword arguments of [`MavorsImageProcessor`] on top of transformers' `ImagesKwargs`.

    Attributes:
        image_size (`int`): R_v, the side of the ViT's square pretraining images (SigLIP's `image_size`).
        patch_size (`int`): p, the ViT's patch side in pixels.
        spatial_merge_size (`int`): side of the average-pooling window; piece sides are multiples of
            `spatial_merge_size * patch_size` so that the patch grid pools evenly.
        max_slices (`int`): upper bound of the number of sub-images per image (eq. 8); 1 disables tiling.
        max_image_pixels (`int`): images with more pixels are refused before decoding.
    """

    image_size: int
    patch_size: int
    spatial_merge_size: int
    max_slices: int
    max_image_pixels: int


# --------------------------------------------------------------------------------------------------------
# Geometry shared by images and videos
# --------------------------------------------------------------------------------------------------------


def check_image_size(width: int, height: int, max_pixels: int, name: str) -> None:
    """Reject empty, oversized and extremely elongated images (or video frames) with a `ValueError`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"{name} has a zero size ({width}x{height} pixels); width and height must be >= 1")
    if width * height > max_pixels:
        raise ValueError(
            f"{name} has {width}x{height} = {width * height} pixels, more than max_image_pixels={max_pixels}; "
            "downscale it first or raise `max_image_pixels`"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"{name} has an aspect ratio of {ratio:.1f}:1 ({width}x{height}); at most "
            f"{MAX_ASPECT_RATIO}:1 is accepted"
        )


def get_dynamic_resolution(
    width: float, height: float, image_size: int, patch_size: int, spatial_merge_size: int = 2
) -> tuple[int, int]:
    """`(height, width)` in pixels that a `width x height` image or frame is resized to (SPEC §3.1).

    The target is `(R_v * sqrt(W / H), R_v * sqrt(H / W))`: the pixel count of the ViT's `R_v x R_v`
    pretraining images at the input's aspect ratio. Each side is rounded to the nearest multiple of
    `spatial_merge_size * patch_size` (at least one), so the patch grid has sides divisible by the pooling
    window. Example: 1280x720 at R_v=384, p=14 -> (280, 504), a 20x36 patch grid, 180 tokens per chunk.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {ratio:.1f}:1 ({width}x{height}) exceeds {MAX_ASPECT_RATIO}:1")
    unit = patch_size * spatial_merge_size
    aspect = math.sqrt(width / height)

    def round_to_unit(x: float) -> int:
        return max(unit, int(math.floor(x / unit + 0.5)) * unit)

    return round_to_unit(image_size / aspect), round_to_unit(image_size * aspect)


def get_slice_grid(width: int, height: int, image_size: int, max_slices: int) -> tuple[int, int] | None:
    """Sub-image grid `(columns m, rows n)` of paper eq. 8, or `None` when the image is not tiled.

    `N_s = min(floor(W * H / R_v^2), max_slices)`; `N_s <= 1` means no tiling. Candidates are all (m, n) with
    `m * n` in `{N_s - 1, N_s, N_s + 1}`, excluding `m * n = 1` and `m * n > max_slices`; the pick minimises
    `|log(W / H) - log(m / n)|`, ties going to the smaller `m * n`, then the smaller m. The distance is
    compared exactly (as `max(x, 1 / x)` of the rational `x = W * n / (H * m)`), so ties are real ties.
    """
    num_slices = min((width * height) // (image_size * image_size), max_slices)
    if num_slices <= 1:
        return None
    best_key, best = None, None
    for count in (num_slices - 1, num_slices, num_slices + 1):
        if count <= 1 or count > max_slices:
            continue
        for columns in range(1, count + 1):
            if count % columns:
                continue
            rows = count // columns
            ratio = Fraction(width * rows, height * columns)
            key = (max(ratio, 1 / ratio), count, columns)
            if best_key is None or key < best_key:
                best_key, best = key, (columns, rows)
    return best


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(C, H, W) -> (H/p * W/p, C * p * p): patches in row-major order of the grid, values (C, p, p)."""
    channels, height, width = pixels.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = pixels.reshape(channels, grid_h, patch_size, grid_w, patch_size)
    return patches.permute(1, 3, 0, 2, 4).reshape(grid_h * grid_w, channels * patch_size * patch_size)


def normalization_affine(
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel `(scale, shift)` such that `processed = raw_uint8 * scale + shift`."""
    scale = torch.full((3,), float(rescale_factor) if do_rescale else 1.0)
    shift = torch.zeros(3)
    if do_normalize:
        mean = torch.tensor(_as_triple(image_mean, "image_mean"), dtype=torch.float32)
        std = torch.tensor(_as_triple(image_std, "image_std"), dtype=torch.float32)
        if (std <= 0).any():
            raise ValueError(f"image_std must be positive, got {tuple(std.tolist())}")
        scale, shift = scale / std, -mean / std
    return scale, shift


def _as_triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise ValueError(f"{name} must have 1 or 3 values (one per RGB channel), got {len(values)}: {values}")
    return values


# --------------------------------------------------------------------------------------------------------
# Decoding and RGB conversion
# --------------------------------------------------------------------------------------------------------


def describe_input(value: Any) -> str:
    """A short human name of an input, for error messages."""
    if isinstance(value, (str, os.PathLike)):
        return f"'{os.fspath(value)}'"
    if isinstance(value, PIL.Image.Image):
        return f"PIL image {value.size[0]}x{value.size[1]} mode {value.mode}"
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return f"file object '{name}'"
    return type(value).__name__


def check_media_file(path: str | os.PathLike, kind: str, name: str) -> None:
    """Refuse a missing, directory or empty `kind` ("image" / "video") file before opening it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} file {name} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{kind} path {name} is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{kind} file {name} is empty (0 bytes)")


def open_image(
    source: str | os.PathLike | bytes | Any, max_pixels: int, name: str | None = None
) -> PIL.Image.Image:
    """Open an image file (path, bytes, file object, http(s) URL or base64 string), refusing oversized ones.

    PIL reads only the header in `Image.open`, so the size check happens before any pixel is decoded.
    """
    name = name or describe_input(source)
    if isinstance(source, str) and (source.startswith(("http://", "https://")) or source.startswith("data:")):
        from transformers.image_utils import load_image

        image = load_image(source)
        check_image_size(image.width, image.height, max_pixels, f"image {name}")
        return image
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        check_media_file(source, "image", name)
    try:
        with warnings.catch_warnings():
            # Our own `max_pixels` check below replaces PIL's decompression-bomb warning.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(source)
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(f"image {name} is larger than max_image_pixels={max_pixels}: {error}") from error
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"image {name} cannot be read: not a valid or complete image file ({error})"
        ) from error
    check_image_size(image.width, image.height, max_pixels, f"image {name}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {name} is truncated or corrupt: {error}") from error
    return image


def pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB copy of a PIL image: EXIF orientation applied, alpha composited on white, 16-bit scaled to 8-bit."""
    if image.getexif().get(0x0112, 1) != 1:  # 0x0112 = Orientation
        image = PIL.ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return PIL.Image.fromarray(_to_uint8(np.asarray(image), high_bit_depth=mode != "F")).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, high_bit_depth: bool = True) -> np.ndarray:
    """Scale an integer or float array to uint8 by its dtype's nominal range (see `_ACCEPTED_DTYPES`)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (high_bit_depth and array.dtype.kind in "iu"):
        # 16-bit samples (PIL's "I;16"/"I" modes hold 16-bit PNGs); 65535 / 257 = 255 exactly.
        return (np.clip(array, 0, 65535).astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"unsupported pixel dtype {array.dtype}; accepted: {_ACCEPTED_DTYPES}")


def array_to_rgb_image(array: np.ndarray | torch.Tensor, name: str) -> PIL.Image.Image:
    """PIL RGB image of a (H, W), (H, W, C) or (C, H, W) array, C in {1, 3, 4} (4 = RGBA, composited on white)."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        if tensor.dtype not in (torch.uint8, torch.bool, torch.float32, torch.float64, torch.uint16):
            raise TypeError(f"{name}: unsupported tensor dtype {tensor.dtype}; accepted: {_ACCEPTED_DTYPES}")
        array = tensor.numpy()
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16, np.bool_, np.float16, np.float32, np.float64):
        raise TypeError(f"{name}: unsupported pixel dtype {array.dtype}; accepted: {_ACCEPTED_DTYPES}")
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name}: an image array must be (H, W), (H, W, C) or (C, H, W) with C in (1, 3, 4), "
            f"got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has a zero size ({array.shape[1]}x{array.shape[0]} pixels)")
    array = _to_uint8(array, high_bit_depth=False)
    channels = array.shape[-1]
    if channels == 1:
        return PIL.Image.fromarray(np.ascontiguousarray(array[..., 0])).convert("RGB")
    if channels == 4:
        return pil_to_rgb(PIL.Image.fromarray(np.ascontiguousarray(array)))
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def load_rgb_image(image: Any, max_pixels: int) -> PIL.Image.Image:
    """Any accepted image input -> PIL RGB image, with size checks before decoding where possible."""
    name = describe_input(image)
    if isinstance(image, PIL.Image.Image):
        check_image_size(image.width, image.height, max_pixels, f"image {name}")
        return pil_to_rgb(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        rgb = array_to_rgb_image(image, f"image {name}")
        check_image_size(rgb.width, rgb.height, max_pixels, f"image {name}")
        return rgb
    if isinstance(image, (str, os.PathLike, bytes)) or hasattr(image, "read"):
        return pil_to_rgb(open_image(image, max_pixels, name))
    raise TypeError(
        f"unsupported image input {name}; expected a PIL image, a numpy array or torch tensor "
        "((H, W), (H, W, C) or (C, H, W)), a path, bytes, a file object or an http(s) URL"
    )


def is_image_like(value: Any) -> bool:
    """True for one image (not a list of images)."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike, bytes)):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim in (2, 3)
    return hasattr(value, "read")


def make_flat_list_of_images(images: Any) -> list[Any]:
    """Flatten an image, a list of images, a batch (list of lists) or an (N, H, W, C) array into a list."""
    if images is None:
        return []
    if is_image_like(images):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in make_flat_list_of_images(item)]
    raise TypeError(
        f"unsupported image input {describe_input(images)}; expected an image, a list of images or a list of "
        "lists of images"
    )


def validate_positive_ints(options: dict[str, Any], names: Sequence[str]) -> None:
    for key in names:
        value = options.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")


def merge_call_options(processor: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Call kwargs over the processor's stored defaults, type-checked against its `valid_kwargs`."""
    valid = processor.valid_kwargs.__annotations__
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{type(processor).__name__} got unexpected keyword arguments {unknown}")
    try:
        validate_typed_dict(processor.valid_kwargs, {k: v for k, v in kwargs.items() if v is not None})
    except StrictDataclassFieldValidationError as error:
        raise TypeError(f"{type(processor).__name__}: {error}") from error
    options = {key: getattr(processor, key, None) for key in valid}
    options.update({k: v for k, v in kwargs.items() if v is not None})
    return options


def to_return_type(data: dict[str, Any], return_tensors: Any) -> dict[str, Any]:
    """Tensors stay torch tensors unless numpy is asked for."""
    if return_tensors is not None and str(getattr(return_tensors, "value", return_tensors)) == "np":
        return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    return data


# --------------------------------------------------------------------------------------------------------
# The image processor
# --------------------------------------------------------------------------------------------------------


class MavorsPixelDefaults:
    """Defaults the image and video processors share, so their geometry and normalisation cannot drift apart:
    SigLIP-so400m-patch14-384 (R_v 384, patch 14), 2x2 pooling, SigLIP's mean/std and bicubic resampling."""

    image_size = 384
    patch_size = 14
    spatial_merge_size = 2
    max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS
    resample = PILImageResampling.BICUBIC
    image_mean = list(SIGLIP_MEAN)
    image_std = list(SIGLIP_STD)
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True


class MavorsImageProcessor(MavorsPixelDefaults, PilBackend):
    r"""
    Image processor of Mavors (PIL/NumPy backend, no torchvision).

    Each image is converted to RGB (grayscale, RGBA/LA/palette with transparency composited on white, CMYK,
    16-bit, EXIF orientation), split into a thumbnail plus `m x n` sub-images when it is large (paper eq. 8,
    `max_slices` caps the sub-image count), every piece resized to the ViT's pixel budget at its own aspect
    ratio (SPEC §3.1), rescaled and normalised with SigLIP's mean and std, and cut into patches.

    Args:
        image_size (`int`, *optional*, defaults to 384):
            R_v, the ViT's pretraining resolution (SigLIP's `image_size`).
        patch_size (`int`, *optional*, defaults to 14):
            The ViT's patch side in pixels.
        spatial_merge_size (`int`, *optional*, defaults to 2):
            Side of the 2x2 average pooling; piece sides are multiples of `spatial_merge_size * patch_size`.
        max_slices (`int`, *optional*, defaults to 9):
            The most sub-images an image is cut into (MiniCPM-V's value). 1 disables tiling (training stages
            1 and 1.5 of the paper).
        max_image_pixels (`int`, *optional*, defaults to 2**27):
            Larger images raise a `ValueError` before their pixels are decoded.
        image_mean, image_std (`list[float]`, *optional*, defaults to SigLIP's 0.5 / 0.5):
            Normalisation, per RGB channel.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`):
            Resampling filter of the resize (SigLIP's).
    """

    valid_kwargs = MavorsImagesKwargs
    model_input_names = ["pixel_values", "image_grid_thw"]

    max_slices = 9

    def __init__(self, **kwargs: Unpack[MavorsImagesKwargs]) -> None:
        super().__init__(**kwargs)

    # -- planning ------------------------------------------------------------------------------------------

    def get_image_layout(
        self,
        width: int,
        height: int,
        image_size: int | None = None,
        patch_size: int | None = None,
        spatial_merge_size: int | None = None,
        max_slices: int | None = None,
    ) -> dict[str, Any]:
        """How a `width x height` image is cut, without touching pixels.

        Returns a dict with `thumbnail_size` `(h, w)` in pixels, `slice_grid` `(rows, columns)` (`(1, 1)` when
        not tiled), `slice_size` `(h, w)` or `None`, and `grid_thw`, the `(1, h_patches, w_patches)` row of every
        piece in order (thumbnail first, then sub-images row-major).
        """
        image_size = image_size or self.image_size
        patch_size = patch_size or self.patch_size
        spatial_merge_size = spatial_merge_size or self.spatial_merge_size
        max_slices = max_slices or self.max_slices
        thumbnail = get_dynamic_resolution(width, height, image_size, patch_size, spatial_merge_size)
        grid = get_slice_grid(width, height, image_size, max_slices)
        grid_thw = [(1, thumbnail[0] // patch_size, thumbnail[1] // patch_size)]
        slice_size = None
        if grid is not None:
            columns, rows = grid
            slice_size = get_dynamic_resolution(
                width / columns, height / rows, image_size, patch_size, spatial_merge_size
            )
            grid_thw += [(1, slice_size[0] // patch_size, slice_size[1] // patch_size)] * (columns * rows)
        return {
            "thumbnail_size": thumbnail,
            "slice_grid": (grid[1], grid[0]) if grid is not None else (1, 1),
            "slice_size": slice_size,
            "grid_thw": grid_thw,
        }

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Number of patch rows (of `pixel_values`) an image of this size produces, over all its pieces."""
        layout = self.get_image_layout(width, height, **(images_kwargs or {}))
        return sum(t * h * w for t, h, w in layout["grid_thw"])

    # -- processing ----------------------------------------------------------------------------------------

    def preprocess(self, images: Any, **kwargs: Unpack[MavorsImagesKwargs]) -> BatchFeature:
        """Process one image or a (nested) list of images into packed patches (see the module docstring).

        Returns a `BatchFeature` with `pixel_values` (patches, 3 * p * p) float32, `image_grid_thw` (pieces, 3)
        and `image_slice_grid` (images, 2), torch tensors (numpy with `return_tensors="np"`).
        """
        options = merge_call_options(self, kwargs)
        validate_positive_ints(
            options, ("image_size", "patch_size", "spatial_merge_size", "max_slices", "max_image_pixels")
        )
        scale, shift = normalization_affine(
            options["do_rescale"],
            options["rescale_factor"],
            options["do_normalize"],
            options["image_mean"],
            options["image_std"],
        )
        image_list = make_flat_list_of_images(images)
        # Read and check every image before processing any, so a bad input fails the call up front.
        rgb_images = [load_rgb_image(image, options["max_image_pixels"]) for image in image_list]

        pixel_values, grid_thw, slice_grid = [], [], []
        for image in rgb_images:
            pieces, layout = self._cut_pieces(image, options)
            for piece in pieces:
                pixel_values.append(self._pack_piece(piece, scale, shift, options["patch_size"]))
            grid_thw += layout["grid_thw"]
            slice_grid.append(layout["slice_grid"])

        patch_dim = 3 * options["patch_size"] ** 2
        data = {
            "pixel_values": torch.cat(pixel_values) if pixel_values else torch.zeros(0, patch_dim),
            "image_grid_thw": torch.tensor(grid_thw, dtype=torch.long).reshape(-1, 3),
            "image_slice_grid": torch.tensor(slice_grid, dtype=torch.long).reshape(-1, 2),
        }
        return BatchFeature(data=to_return_type(data, options.get("return_tensors")))

    def _cut_pieces(
        self, image: PIL.Image.Image, options: dict[str, Any]
    ) -> tuple[list[PIL.Image.Image], dict]:
        """Thumbnail and sub-images of one RGB image, each resized to its dynamic resolution."""
        width, height = image.size
        layout = self.get_image_layout(
            width,
            height,
            image_size=options["image_size"],
            patch_size=options["patch_size"],
            spatial_merge_size=options["spatial_merge_size"],
            max_slices=options["max_slices"],
        )
        resample = PILImageResampling(options["resample"])
        thumb_h, thumb_w = layout["thumbnail_size"]
        pieces = [image.resize((thumb_w, thumb_h), resample=resample)]
        rows, columns = layout["slice_grid"]
        if layout["slice_size"] is not None:
            slice_h, slice_w = layout["slice_size"]
            for row in range(rows):
                for column in range(columns):
                    # Equal sub-regions of the original (fractional boxes), resized straight from the source.
                    box = (
                        column * width / columns,
                        row * height / rows,
                        (column + 1) * width / columns,
                        (row + 1) * height / rows,
                    )
                    pieces.append(image.resize((slice_w, slice_h), resample=resample, box=box))
        return pieces, layout

    @staticmethod
    def _pack_piece(
        piece: PIL.Image.Image, scale: torch.Tensor, shift: torch.Tensor, patch_size: int
    ) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(piece, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
        normalized = torch.addcmul(shift.view(3, 1, 1), pixels, scale.view(3, 1, 1))
        return patchify(normalized, patch_size)


__all__ = [
    "MavorsImageProcessor",
    "MavorsImagesKwargs",
    "get_dynamic_resolution",
    "get_slice_grid",
    "patchify",
]
