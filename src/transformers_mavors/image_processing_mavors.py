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

The geometry helpers at module level (`get_dynamic_resolution`, `get_slice_grid`, `patchify`,
`normalization_affine`) are shared with the video processor, so a frame and an image of the same size always get
the same resolution; reading and RGB conversion live in `media_io.py`, shared by both processors.

The processor follows transformers' `PilBackend` pipeline: `preprocess` checks and completes the options,
`process_image` reads each input to RGB (size checks before decoding), and `_preprocess` cuts, resizes, normalises
and packs the pieces.
"""

import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import PIL.Image
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import logging

from transformers_mavors_planning.sampling import PixelGeometryDefaults, get_dynamic_resolution

from .media_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_ASPECT_RATIO,  # noqa: F401  (re-exported: the aspect-ratio limit of images)
    describe_input,
    load_rgb_image,
    to_return_type,
    validate_positive_ints,
)

logger = logging.get_logger(__name__)

# SigLIP's normalisation (google/siglip-so400m-patch14-384 preprocessor_config.json).
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

# Options that must be integers >= 1.
_POSITIVE_INT_OPTIONS = ("image_size", "patch_size", "spatial_merge_size", "max_slices", "max_image_pixels")


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
# Input structure
# --------------------------------------------------------------------------------------------------------


def is_image_like(value: Any) -> bool:
    """True for one image (not a list of images)."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike, bytes)):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim in (2, 3)
    return hasattr(value, "read")


def make_flat_list_of_images(images: Any, _where: str = "images") -> list[Any]:
    """Flatten an image, a list of images, a batch (list of lists) or an (N, H, W, C) array into a list.

    `images=None` means no images; a `None` inside a list is a `ValueError` naming its index."""
    if images is None:
        return []
    if is_image_like(images):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        flat = []
        for index, item in enumerate(images):
            if item is None:
                raise ValueError(
                    f"{_where}[{index}] is None; every item must be an image (PIL image, path, URL, bytes, "
                    "file object or array) or a list of images"
                )
            flat.extend(make_flat_list_of_images(item, f"{_where}[{index}]"))
        return flat
    raise TypeError(
        f"unsupported image input {describe_input(images)}; expected an image, a list of images or a list of "
        "lists of images"
    )


# --------------------------------------------------------------------------------------------------------
# The image processor
# --------------------------------------------------------------------------------------------------------


class MavorsPixelDefaults(PixelGeometryDefaults):
    """Defaults the image and video processors share, so their geometry and normalisation cannot drift apart:
    SigLIP-so400m-patch14-384 (R_v 384, patch 14) and 2x2 pooling (`PixelGeometryDefaults`, in the light planning
    package), SigLIP's mean/std and bicubic resampling."""

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

    # -- processing: transformers' PilBackend pipeline ---------------------------------------------------

    def preprocess(self, images: Any, **kwargs: Unpack[MavorsImagesKwargs]) -> BatchFeature:
        """Process one image or a (nested) list of images into packed patches (see the module docstring).

        Returns a `BatchFeature` with `pixel_values` (patches, 3 * p * p) float32, `image_grid_thw` (pieces, 3)
        and `image_slice_grid` (images, 2), torch tensors (numpy with `return_tensors="np"`).
        """
        kwargs = {key: value for key, value in kwargs.items() if value is not None}  # None: the default
        try:
            return super().preprocess(images, **kwargs)
        except StrictDataclassFieldValidationError as error:  # a wrongly typed option
            raise TypeError(f"{type(self).__name__}: {error}") from error

    def _validate_preprocess_kwargs(self, **kwargs: Any) -> None:
        # Pieces are sized by `image_size` and the pixel budget, not by `size`, so the base checks do not apply.
        validate_positive_ints(kwargs, _POSITIVE_INT_OPTIONS)
        normalization_affine(
            kwargs["do_rescale"],
            kwargs["rescale_factor"],
            kwargs["do_normalize"],
            kwargs["image_mean"],
            kwargs["image_std"],
        )

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> list[Any]:
        # No fetching here: `process_image` opens paths, URLs, bytes and file objects after their size check, and
        # every image is read (and checked) before any is processed, so a bad input fails the call up front.
        return make_flat_list_of_images(images)

    def process_image(
        self, image: Any, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, **kwargs: Any
    ) -> np.ndarray:
        """Any accepted image input -> (3, H, W) uint8 RGB (see `media_io.load_rgb_image` for the conversions)."""
        return np.moveaxis(np.asarray(load_rgb_image(image, max_image_pixels), dtype=np.uint8), -1, 0)

    def _preprocess(
        self,
        images: list[np.ndarray],
        image_size: int,
        patch_size: int,
        spatial_merge_size: int,
        max_slices: int,
        resample: PILImageResampling | int,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
        return_tensors: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """(3, H, W) uint8 RGB images -> thumbnail and sub-images of each, resized, normalised and packed."""
        scale, shift = normalization_affine(do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        geometry = dict(
            image_size=image_size,
            patch_size=patch_size,
            spatial_merge_size=spatial_merge_size,
            max_slices=max_slices,
        )
        pixel_values, grid_thw, slice_grid = [], [], []
        for image in images:
            pieces, layout = self._cut_pieces(
                PIL.Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1))), geometry, resample
            )
            for piece in pieces:
                pixel_values.append(self._pack_piece(piece, scale, shift, patch_size))
            grid_thw += layout["grid_thw"]
            slice_grid.append(layout["slice_grid"])

        data = {
            "pixel_values": torch.cat(pixel_values) if pixel_values else torch.zeros(0, 3 * patch_size**2),
            "image_grid_thw": torch.tensor(grid_thw, dtype=torch.long).reshape(-1, 3),
            "image_slice_grid": torch.tensor(slice_grid, dtype=torch.long).reshape(-1, 2),
        }
        return BatchFeature(data=to_return_type(data, return_tensors))

    def _cut_pieces(
        self, image: PIL.Image.Image, geometry: dict[str, int], resample: PILImageResampling | int
    ) -> tuple[list[PIL.Image.Image], dict]:
        """Thumbnail and sub-images of one RGB image, each resized to its dynamic resolution."""
        width, height = image.size
        layout = self.get_image_layout(width, height, **geometry)
        resample = PILImageResampling(resample)
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
