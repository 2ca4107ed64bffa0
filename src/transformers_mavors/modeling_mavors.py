"""Mavors: multi-granularity video representation for a multimodal LLM (arXiv 2504.10068).

Reading order, small blocks first:

- `MavorsVisionEmbeddings`: eq. 1, the 3D patch embedding over chunks of F frames (scaled by 1/F), plus
  SigLIP's absolute position embedding resized to the chunk's patch grid (eq. 7).
- SigLIP encoder layers (transformers' own `SiglipEncoder`) and post-layernorm, then 2x2 average pooling.
- `MavorsAggregator`: the Inter-chunk Feature Aggregator, causal transformer layers whose rotary positions
  are chunk timestamps (C-RoPE, eqs. 2-6).
- `merge_similar_chunk_tokens`: optional token compression between the two encoders (paper §5.4), off by default.
- `MavorsVisionModel`: the two encoders over packed, variable-resolution inputs.
- `MavorsModel`: vision model -> MLP projector -> Qwen2 language model, visual features replacing placeholder
  tokens.
- `MavorsForConditionalGeneration`: `MavorsModel` + LM head + generation.

Packed inputs (SPEC §7): `pixel_values_videos` is `(sum of patches, C*F*p*p)`, one row per patch, chunks one
after another, and within a chunk patches in row-major order of its `h x w` patch grid; a row holds the
patch's values in `(C, F, p, p)` order. Images (`pixel_values`) are the same with one frame: `(C, p, p)`.
`grid_thw` rows are `(chunks, h, w)` (videos) or `(1, h, w)` (image pieces).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.siglip.modeling_siglip import (
    SiglipAttention,
    SiglipEncoder,
    SiglipEncoderLayer,
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.output_capturing import capture_outputs

from .configuration_mavors import (
    MavorsConfig,
    MavorsVisionConfig,
    check_token_compression_threshold,
    num_visual_tokens,
)
from .cpu_kernels import (
    fusable_siglip_layer,
    fused_linear,
    fused_path_applies,
    fused_siglip_layer,
    patch_gemm,
    unhooked,
)

logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------------
# Intra-chunk Vision Encoder (IVE)
# ------------------------------------------------------------------------------------------------


class MavorsVisionEmbeddings(nn.Module):
    """3D patch embedding (eq. 1) and resized SigLIP position embedding (eq. 7).

    `patch_embedding` is a `Conv3d` with kernel = stride = (F, p, p). Its weight is stored as the SigLIP 2D
    kernel replicated F times, and the convolution output is divided by F (eq. 1); the bias is not divided. A
    chunk of F identical frames therefore embeds exactly like SigLIP embeds that frame. An image (one frame)
    uses the temporal mean of the kernel, which is the same computation at 1/F of the cost.
    """

    def __init__(self, config: MavorsVisionConfig):
        super().__init__()
        self.config = config
        self.frames_per_chunk = config.frames_per_chunk
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Conv3d(
            config.num_channels,
            config.hidden_size,
            kernel_size=(config.frames_per_chunk, config.patch_size, config.patch_size),
            stride=(config.frames_per_chunk, config.patch_size, config.patch_size),
        )
        self.grid_side = config.image_size // config.patch_size  # P_v: patches per side at pretraining
        self.position_embedding = nn.Embedding(self.grid_side**2, config.hidden_size)

    def patch_kernel(self, num_frames: int) -> tuple[torch.Tensor, float]:
        """The kernel as a `(d, C*frames*p*p)` matrix for rows of `num_frames` frames, and the scale to apply.

        For chunks the matrix is a view of the stored weight and the scale is eq. 1's 1/F, applied by the GEMM
        itself (its alpha), so no scaled copy of the `d x C*F*p*p` kernel is made per call.
        """
        weight = self.patch_embedding.weight  # (d, C, F, p, p)
        if num_frames == self.frames_per_chunk:
            return weight.flatten(1), 1.0 / self.frames_per_chunk
        if num_frames == 1:
            # one frame standing for all F temporal positions: sum_t W_t x / F = mean_t(W_t) x
            return weight.mean(dim=2).flatten(1), 1.0
        raise ValueError(
            f"patch rows must hold 1 or frames_per_chunk={self.frames_per_chunk} frames, got {num_frames}"
        )

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """eq. 7: SigLIP's learned `P_v x P_v` grid resampled to `height x width` patches -> `(h*w, d)`."""
        table = self.position_embedding.weight
        if height == width == self.grid_side:
            return table
        grid = table.reshape(1, self.grid_side, self.grid_side, -1).permute(0, 3, 1, 2)
        # the same bicubic resampling as SiglipVisionEmbeddings.interpolate_pos_encoding
        grid = F.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
        return grid.to(table.dtype).permute(0, 2, 3, 1).reshape(height * width, -1)

    def forward(
        self,
        pixel_rows: torch.Tensor,
        height: int,
        width: int,
        position_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(chunks, h*w, C*frames*p*p)` patch rows of chunks sharing one grid -> `(chunks, h*w, d)`.

        `position_embeddings` (`(h*w, d)`, from `position_embeddings(height, width)`) may be passed by a caller
        that embeds many micro-batches of one grid, so the resampling runs once.
        """
        num_frames = pixel_rows.shape[-1] // (self.config.num_channels * self.patch_size**2)
        kernel, scale = self.patch_kernel(num_frames)
        rows = pixel_rows.reshape(-1, pixel_rows.shape[-1]).to(kernel.dtype)
        # eq. 1: F_i = Conv(C_i) / F as one GEMM on the pre-cut patches, bias + (1/F) rows @ W^T: (chunks*n_V, d)
        embeddings = patch_gemm(rows, kernel, self.patch_embedding.bias, scale, self.config.fused_cpu_kernels)
        if position_embeddings is None:
            position_embeddings = self.position_embeddings(height, width)
        # eq. 7, added in place: (chunks, n_V, d)
        return embeddings.view(*pixel_rows.shape[:-1], -1).add_(position_embeddings)


# ------------------------------------------------------------------------------------------------
# Inter-chunk Feature Aggregator (IFA) with chunk-level RoPE
# ------------------------------------------------------------------------------------------------


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables `(batch, seq, head_dim)` for integer `positions` `(batch, seq)` (standard RoPE form)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    angles = positions.float()[..., None] * inv_freq  # (batch, seq, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE rotation of `x` `(batch, heads, seq, head_dim)` by `(batch, seq, head_dim)` tables (eq. 4).

    The value of `x * cos + rotate_half(x) * sin` (transformers' `apply_rotary_pos_emb`), built in one new tensor
    instead of four temporaries of x's size: over a long video's tokens each is tens of MB.
    """
    half = x.shape[-1] // 2
    out = torch.cat((x[..., half:], x[..., :half]), dim=-1).mul_(sin.unsqueeze(1))
    out[..., :half].neg_()  # rotate_half's sign
    return out.addcmul_(x, cos.unsqueeze(1))


# Most tokens per block for the per-token MLPs (IFA MLP, projector) when no gradient is recorded: long videos then
# never hold a whole (tokens, intermediate) activation. The IFA's blocks are also at most the rows of one ViT
# micro-batch, so its MLP never holds more than the ViT's did. Blocks give the same result as one pass.
TOKEN_BLOCK = 2048


class MavorsAggregatorAttention(nn.Module):
    """Causal self-attention whose rotary angle depends on the chunk distance only (eq. 4)."""

    def __init__(self, config: MavorsVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.ifa_num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = True
        self.num_key_value_groups = 1
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj.zero_init = True

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        shape = (batch, seq, self.num_heads, self.head_dim)
        # eq. 3: Q, K, V = Linear(chi) -> (batch, heads, seq, head_dim)
        fused = self.config.fused_cpu_kernels  # oneDNN GEMMs in CPU inference (cpu_kernels.py)
        query = fused_linear(self.q_proj, hidden_states, fused).view(shape).transpose(1, 2)
        key = fused_linear(self.k_proj, hidden_states, fused).view(shape).transpose(1, 2)
        value = fused_linear(self.v_proj, hidden_states, fused).view(shape).transpose(1, 2)
        # eq. 4: q_l R_{pos(l) - pos(l')} k_l'^T, pos = chunk position id of the token
        query = rotate(query, cos, sin)  # one at a time, so only one unrotated copy is alive at once
        key = rotate(key, cos, sin)

        implementation = self.config._attn_implementation or "sdpa"
        dropout = self.dropout if self.training else 0.0
        # eqs. 5-6: softmax(SDP) V under the token-level causal mask
        if implementation == "sdpa":
            # torch's kernel called here rather than through the interface, so Q/K/V are released before the
            # (batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim) copy: one long-video activation less
            attn_output = F.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout, is_causal=True, scale=self.scaling
            )
            del query, key, value
            attn_output = attn_output.transpose(1, 2)
        else:
            attention_mask = None
            if "flash" not in implementation:
                # eager (and anything without a native causal flag) gets the token-level causal mask explicitly
                attention_mask = torch.full(
                    (seq, seq), torch.finfo(query.dtype).min, dtype=query.dtype, device=query.device
                )
                attention_mask = attention_mask.triu(1)[None, None]
            attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
                implementation, eager_attention_forward
            )
            attn_output, _ = attention_interface(
                self, query, key, value, attention_mask, is_causal=True, scaling=self.scaling, dropout=dropout
            )
        return fused_linear(self.o_proj, attn_output.reshape(batch, seq, -1), fused)


class MavorsAggregatorMLP(nn.Module):
    def __init__(self, config: MavorsVisionConfig):
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.hidden_size, config.ifa_intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.ifa_intermediate_size, config.hidden_size)
        self.fc2.zero_init = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        fused = self.config.fused_cpu_kernels
        if not fused_path_applies(hidden_states, fused):
            return self.fc2(self.act(self.fc1(hidden_states)))
        # CPU inference: GELU fused into the fc1 GEMM (cpu_kernels.py)
        inner = fused_linear(self.fc1, hidden_states, fused, activation=self.config.hidden_act)
        return fused_linear(self.fc2, inner, fused)


class MavorsAggregatorLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer (eqs. 3-6). Output projections start at zero, so a fresh layer is identity."""

    def __init__(self, config: MavorsVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MavorsAggregatorAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MavorsAggregatorMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        token_block: int | None = None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states), cos, sin)
        token_block = token_block or TOKEN_BLOCK
        if torch.is_grad_enabled() or hidden_states.shape[1] <= token_block:
            return hidden_states + self.mlp(self.layer_norm2(hidden_states))
        # Without autograd the MLP, which works per token, runs over blocks of tokens in place, so its
        # (tokens, ifa_intermediate_size) activation never exists whole: long-video memory stays near the tokens kept.
        for block in hidden_states.split(token_block, dim=1):
            block += self.mlp(self.layer_norm2(block))
        return hidden_states


class MavorsAggregator(nn.Module):
    """The Inter-chunk Feature Aggregator: L_inter causal layers with chunk-level rotary positions (C-RoPE).

    C-RoPE lives here whole: the chunk-to-token position expansion, the chunk/token position switch
    (`ifa_position_mode`) and the rotation (in `MavorsAggregatorAttention`).
    """

    def __init__(self, config: MavorsVisionConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            [MavorsAggregatorLayer(config) for _ in range(config.ifa_num_hidden_layers)]
        )

    def token_positions(
        self, chunk_positions: torch.Tensor, tokens_per_chunk: int | None, seq_len: int
    ) -> torch.Tensor:
        """Rotary position of every token, `(batch, seq_len)`.

        eq. 4 (C-RoPE, `ifa_position_mode="chunk"`): every token of chunk i carries chunk i's position id, so a
        `(batch, chunks)` `chunk_positions` is repeated `tokens_per_chunk` times; with `tokens_per_chunk=None` the
        ids are already one per token (token compression keeps each merged token at its first chunk's id).
        Standard RoPE (`"token"`, the paper's Table 4 ablation): the token's index in the sequence.
        """
        if self.config.ifa_position_mode == "token":
            return torch.arange(seq_len, device=chunk_positions.device).expand(chunk_positions.shape[0], -1)
        if tokens_per_chunk is None:
            return chunk_positions
        return chunk_positions.repeat_interleave(tokens_per_chunk, dim=-1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        chunk_positions: torch.Tensor,
        tokens_per_chunk: int | None = None,
        token_block: int | None = None,
    ) -> torch.Tensor:
        """eqs. 2-6 over `(batch, seq, d)` sequences of concatenated chunk tokens -> `(batch, seq, d)`.

        Args:
            hidden_states: chi^(0) = Concat(H_1 .. H_cV) of each item (eq. 2), items of one length stacked.
            chunk_positions: `(batch, chunks)` C-RoPE ids, or `(batch, seq)` per-token ids with
                `tokens_per_chunk=None`.
            tokens_per_chunk: tokens of every chunk (n_V / 4), when `chunk_positions` is per chunk.
            token_block: without autograd the MLPs work over blocks of at most this many tokens (default
                `TOKEN_BLOCK`), so long videos never hold a whole `(tokens, ifa_intermediate_size)` activation.
        """
        positions = self.token_positions(chunk_positions, tokens_per_chunk, hidden_states.shape[1])
        head_dim = self.config.hidden_size // self.config.ifa_num_attention_heads
        cos, sin = rotary_cos_sin(positions, head_dim, self.config.ifa_rope_theta, hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin, token_block)
        return hidden_states


# ------------------------------------------------------------------------------------------------
# Optional token compression before the IFA (paper §5.4)
# ------------------------------------------------------------------------------------------------


def merge_similar_chunk_tokens(
    features: torch.Tensor, chunk_positions: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge tokens that barely change from one chunk to the next (paper §5.4): `(c, n, d)` -> `(k, d)`, `(k,)`.

    `features` are one video's pooled IVE tokens (c chunks of n tokens), `chunk_positions` its `(c,)` C-RoPE ids.
    Each token index j is a track through the chunks. Walking the chunks in order, token (i, j) is compared by
    cosine similarity with the open run of track j: the average of the tokens merged into it so far, which is
    token (i-1, j) itself when nothing merged into that one. Strictly above `threshold`, (i, j) joins the run;
    otherwise the run closes and (i, j) opens a new one. Each run becomes one token, the plain average of its
    members, at the position id of the chunk it started in (the earlier chunk's, as the paper keeps).

    Returns the kept tokens and their position ids, ordered by starting chunk, then by index within the chunk
    (row-major), so the IFA's token-order causal mask still reads the video in time order. The first chunk never
    merges (n <= k <= c*n); a threshold above 1 merges nothing.
    """
    chunks, n, _ = features.shape
    # average in at least float32, whatever the model dtype
    values = features.to(torch.promote_types(features.dtype, torch.float32))
    index = torch.arange(n, device=features.device)
    total, count = values[0].clone(), values.new_ones(n)
    start = torch.zeros(n, dtype=torch.long, device=features.device)  # chunk where each open run began
    closed_tokens, closed_keys = [], []
    for i in range(1, chunks):
        mean = total / count[:, None]  # open run of every track: (n, d)
        similarity = F.cosine_similarity(values[i], mean, dim=-1).clamp(-1.0, 1.0)  # (n,)
        merge = similarity > threshold
        closed_tokens.append(mean[~merge])
        closed_keys.append((start * n + index)[~merge])
        total = torch.where(merge[:, None], total + values[i], values[i])
        count = torch.where(merge, count + 1, torch.ones_like(count))
        start = torch.where(merge, start, torch.full_like(start, i))
    closed_tokens.append(total / count[:, None])
    closed_keys.append(start * n + index)
    keys, order = torch.cat(closed_keys).sort()
    tokens = torch.cat(closed_tokens)[order].to(features.dtype)
    return tokens, chunk_positions[keys // n]


# ------------------------------------------------------------------------------------------------
# Pretrained model base
# ------------------------------------------------------------------------------------------------


class MavorsPreTrainedModel(PreTrainedModel):
    config: MavorsConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "MavorsAggregatorLayer", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @property
    def is_gradient_checkpointing(self) -> bool:
        """`is_activation_checkpointing` under its old name, which TRL still reads on every step: without this, each
        read prints transformers' deprecation warning, which a user cannot act on."""
        return self.is_activation_checkpointing

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, strict_weights: bool = False, **kwargs
    ):
        """`PreTrainedModel.from_pretrained`, with a local checkpoint checked before any module is built: its JSON
        files parse, a Mavors `config.json` has both sub-configs, the safetensors headers are readable and the tensor
        shapes match the config, every error naming the file. After loading, missing, unexpected or non-finite
        tensors are a loud warning, or a `ValueError` with `strict_weights=True` (what the CLI uses)."""
        from .loading import check_tensor_shapes, report_loading_info, validate_checkpoint_files

        name = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
        if (
            name is not None
            and os.path.isdir(name)
            and not kwargs.get("subfolder")
            and not kwargs.get("gguf_file")
        ):
            validate_checkpoint_files(name, require_mavors_config=cls.config_class is MavorsConfig)
            config = kwargs.get("config")
            if not isinstance(config, PreTrainedConfig):
                config = cls.config_class.from_pretrained(name)
            quantized = kwargs.get("quantization_config") is not None or hasattr(
                config, "quantization_config"
            )
            if not quantized and not kwargs.get("ignore_mismatched_sizes"):
                check_tensor_shapes(cls, config, Path(name))
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        report_loading_info(model, info, repr(name), strict=strict_weights)
        return (model, info) if want_info else model

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if getattr(module, "zero_init", False):
            # residual-branch outputs of the aggregator start at zero: a fresh aggregator passes the pooled
            # SigLIP features through unchanged (transformers only calls this on modules holding parameters)
            init.zeros_(module.weight)
            init.zeros_(module.bias)


@dataclass
class MavorsVisionModelOutput(BaseModelOutputWithPooling):
    r"""
    Output of [`MavorsVisionModel`] (and of `get_image_features` / `get_video_features`).

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(sum of tokens, hidden_size)`):
            Aggregator output of every item, in input order.
        pooler_output (`tuple(torch.FloatTensor)`, *optional*):
            Set by `get_image_features` / `get_video_features`: the projected features, one `(tokens, hidden)` tensor
            per item.
        token_counts (`torch.LongTensor` of shape `(items,)`):
            Tokens each item yields: `num_visual_tokens(grid row)`, or fewer for a video whose tokens were merged by
            token compression. This is the number of placeholder tokens the item needs in the prompt.
    """

    token_counts: torch.LongTensor | None = None


def _group_by(keys: list) -> dict:
    groups: dict = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


@dataclass(frozen=True)
class MavorsVisionPlan:
    """How `MavorsVisionModel.forward` batches one call's items, decided from `grid_thw` alone (no pixels).

    Attributes:
        grid: `(chunks, h, w)` of every item.
        compressed: per item, whether token compression runs on it (videos of more than one chunk).
        grid_groups: `(h, w)` -> items sharing that patch grid; the IVE encodes each group together, in
            micro-batches of `vision_chunk_batch_size` chunks.
        length_groups: key -> items the IFA runs as one batch: items of equal token count, a compressed video
            alone (its length is known only after merging).
        num_encoder_calls: ViT micro-batches the call runs (`encode_chunks` iterations).
        num_aggregator_calls: IFA calls the call runs.
    """

    grid: list[tuple[int, int, int]]
    compressed: list[bool]
    grid_groups: dict[tuple[int, int], list[int]]
    length_groups: dict
    num_encoder_calls: int
    num_aggregator_calls: int


class MavorsVisionModel(MavorsPreTrainedModel):
    """Intra-chunk Vision Encoder + Inter-chunk Feature Aggregator over packed images and videos."""

    config: MavorsVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    _no_split_modules = ["SiglipEncoderLayer", "MavorsAggregatorLayer"]
    _can_record_outputs = {"hidden_states": SiglipEncoderLayer, "attentions": SiglipAttention}

    def __init__(self, config: MavorsVisionConfig):
        super().__init__(config)
        self.embeddings = MavorsVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.aggregator = MavorsAggregator(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    # -- IVE -------------------------------------------------------------------------------------------------

    def pool(self, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Non-overlapping s x s average pooling of row-major patch grids: `(b, h*w, d)` -> `(b, h*w/s^2, d)`."""
        s = self.config.spatial_merge_size
        return hidden.unflatten(1, (height // s, s, width // s, s)).mean(dim=(2, 4)).flatten(1, 2)

    def vit(self, hidden: torch.Tensor) -> torch.Tensor:
        """The SigLIP layers on embedded patches of one grid, `(b, n_V, d) -> (b, n_V, d)`, no mask.

        In CPU inference with `fused_cpu_kernels`, each layer runs as `cpu_kernels.fused_siglip_layer` (the same
        computation, GEMM epilogues fused); otherwise transformers' `SiglipEncoder` runs it.
        """
        layers = self.encoder.layers
        if (
            fused_path_applies(hidden, self.config.fused_cpu_kernels)
            and unhooked(self.encoder)
            and all(fusable_siglip_layer(layer) for layer in layers)
        ):
            for layer in layers:
                hidden = fused_siglip_layer(layer, hidden)
            return hidden
        return self.encoder(inputs_embeds=hidden).last_hidden_state

    def encode_chunks(
        self, pixel_rows: torch.Tensor, height: int, width: int, blank_micro_batches: int = 0
    ) -> torch.Tensor:
        """IVE on chunks sharing one grid: `(chunks, h*w, row)` -> pooled `(chunks, h*w/s^2, d)`.

        Chunks go through the ViT `vision_chunk_batch_size` at a time, so activation memory is bounded by the
        micro-batch, whatever the video length. `blank_micro_batches` more micro-batches of one blank chunk run
        after them, through the same graph, and are dropped from the result: the rank synchronisation of sharded
        engines (`training/rank_sync.py`) uses them so every rank runs, and back-propagates, as many ViT calls
        in the same order.
        """
        # eq. 7, resampled once per grid; under DeepSpeed ZeRO-3 the table is whole only inside the embeddings'
        # forward (its partitioned weight carries `ds_id`), so it is resampled there, once per micro-batch
        table = self.embeddings.position_embedding.weight
        positions = None if hasattr(table, "ds_id") else self.embeddings.position_embeddings(height, width)
        pooled = []
        for batch in pixel_rows.split(self.config.vision_chunk_batch_size):
            hidden = self.embeddings(batch, height, width, positions)  # eq. 1 + eq. 7: (b, n_V, d)
            hidden = self.vit(hidden)  # ViT: (b, n_V, d)
            pooled.append(self.pool(self.post_layernorm(hidden), height, width))  # (b, n_V / 4, d)
        for _ in range(blank_micro_batches):
            hidden = self.embeddings(pixel_rows.new_zeros(1, *pixel_rows.shape[1:]), height, width, positions)
            hidden = self.vit(hidden)
            pooled.append(self.pool(self.post_layernorm(hidden), height, width))
        if blank_micro_batches:
            return torch.cat(pooled)[: pixel_rows.shape[0]]
        return torch.cat(pooled) if len(pooled) > 1 else pooled[0]

    def encode_chunks_for_capture(
        self, items: list[torch.Tensor], grids: list[tuple[int, int]], **kwargs
    ) -> list[torch.Tensor]:
        """IVE of every item in one padded ViT batch, so each layer runs once and output capture records it once.

        `items` are `(chunks, h*w, row)` per item with `grids` their `(h, w)`. Chunks are padded to the largest
        patch count and padded keys are masked out, so every chunk's result is what `encode_chunks` gives. Used
        when hidden states or attentions are requested (an analysis path: it holds the whole batch at once).
        """
        embedded = [
            self.embeddings(rows, h, w, self.embeddings.position_embeddings(h, w))
            for rows, (h, w) in zip(items, grids, strict=True)
        ]
        chunks = [e.shape[0] for e in embedded]
        lengths = [e.shape[1] for e in embedded for _ in range(e.shape[0])]
        longest = max(lengths)
        batch = torch.cat([F.pad(e, (0, 0, 0, longest - e.shape[1])) for e in embedded])  # (chunks, N, d)
        valid = (
            torch.arange(longest, device=batch.device)[None, :]
            < torch.tensor(lengths, device=batch.device)[:, None]
        )
        mask = torch.zeros(valid.shape, dtype=batch.dtype, device=batch.device)
        mask = mask.masked_fill(~valid, torch.finfo(batch.dtype).min)[:, None, None, :]  # keys only
        hidden = self.post_layernorm(
            self.encoder(inputs_embeds=batch, attention_mask=mask, **kwargs).last_hidden_state
        )
        pooled = []
        for part, (h, w) in zip(hidden.split(chunks), grids, strict=True):
            pooled.append(self.pool(part[:, : h * w], h, w))
        return pooled

    # -- planning and checks ------------------------------------------------------------------------------------

    def plan(
        self, grid_thw: torch.Tensor | list, token_compression_threshold: float | None = None
    ) -> MavorsVisionPlan:
        """The batching of a call on `grid_thw` (see `MavorsVisionPlan`); also validates the grids."""
        config = self.config
        grid = [
            tuple(int(v) for v in row)
            for row in (grid_thw.tolist() if hasattr(grid_thw, "tolist") else grid_thw)
        ]
        threshold = self._compression_threshold(token_compression_threshold)
        compressed = [threshold is not None and t > 1 for t, _, _ in grid]
        # tokens per item; also rejects grids whose sides the pooling window does not divide
        lengths = [num_visual_tokens(row, config.spatial_merge_size) for row in grid]
        grid_groups = _group_by([(h, w) for _, h, w in grid])
        length_groups = _group_by([("compressed", i) if compressed[i] else n for i, n in enumerate(lengths)])
        encoder_calls = sum(
            -(-sum(grid[i][0] for i in members) // config.vision_chunk_batch_size)
            for members in grid_groups.values()
        )
        aggregator_calls = len(length_groups) if config.ifa_num_hidden_layers else 0
        return MavorsVisionPlan(grid, compressed, grid_groups, length_groups, encoder_calls, aggregator_calls)

    def _check_pixel_rows(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        if not torch.is_floating_point(pixel_values):
            raise TypeError(f"pixel values must be a floating point tensor, got dtype {pixel_values.dtype}")
        patch_values = config.num_channels * config.patch_size**2
        if pixel_values.ndim != 2 or pixel_values.shape[1] not in (
            patch_values,
            patch_values * config.frames_per_chunk,
        ):
            raise ValueError(
                f"pixel values must be (patches, {patch_values}) for images or "
                f"(patches, {patch_values * config.frames_per_chunk}) for chunks of frames_per_chunk="
                f"{config.frames_per_chunk} frames, got shape {tuple(pixel_values.shape)}; the processor's "
                "frames_per_chunk and patch_size must match the model's"
            )

    def _compression_threshold(self, threshold: float | None) -> float | None:
        """The threshold in force for one call (`None` = the config's); `None` when nothing could merge."""
        if threshold is None:
            threshold = self.config.token_compression_threshold
        threshold = check_token_compression_threshold(threshold)
        # cosine similarity is at most 1: above it nothing merges, so skip the pass and stay bit-identical to off
        return None if threshold is None or threshold > 1 else threshold

    def _wants_capture(self, kwargs: dict) -> bool:
        return any(
            kwargs.get(f"output_{key}", getattr(self.config, f"output_{key}", False))
            for key in ("hidden_states", "attentions")
        )

    # -- the two encoders --------------------------------------------------------------------------------------

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        grid_thw: torch.LongTensor,
        chunk_positions: torch.LongTensor | None = None,
        token_compression_threshold: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MavorsVisionModelOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum of patches, C*frames*p*p)`):
                Packed patch rows (see module docstring); `frames` is `frames_per_chunk` (videos) or 1 (images).
            grid_thw (`torch.LongTensor` of shape `(items, 3)`):
                `(chunks, h_patches, w_patches)` of every video, or `(1, h, w)` of every image piece.
            chunk_positions (`torch.LongTensor` of shape `(sum of chunks,)`, *optional*):
                C-RoPE position id of every chunk, from its first frame's timestamp on the original timeline.
                Defaults to `0, 1, 2, ...` within each item (contiguous chunks).
            token_compression_threshold (`float`, *optional*):
                Merge similar same-index tokens of adjacent chunks before the aggregator
                (`merge_similar_chunk_tokens`); defaults to `config.token_compression_threshold` (`None`: off). A
                value above 1 merges nothing, so `float("inf")` switches a configured compression off for one call.
                Items of one chunk (images, short videos) are never affected.
            output_hidden_states, output_attentions (`bool`, *optional*):
                Record the ViT's hidden states (embeddings + every layer) and attention weights. The ViT then runs
                all chunks and pieces as one batch padded to the largest patch grid: entry i is
                `(sum of chunks, max patches, d_V)` (attentions `(sum of chunks, heads, max, max)`), rows in input
                order, positions past a row's own patch count padding.

        Returns:
            `MavorsVisionModelOutput` whose `last_hidden_state` is `(sum of tokens, d_V)`: the aggregator output of
            every item, in input order, `(h/2)*(w/2)` tokens per chunk in row-major order of the pooled grid (with
            compression: the kept tokens, by starting chunk then index), and `token_counts` the tokens per item.
        """
        self._check_pixel_rows(pixel_values)
        plan = self.plan(grid_thw, token_compression_threshold)
        patches = sum(t * h * w for t, h, w in plan.grid)
        if patches != pixel_values.shape[0]:
            raise ValueError(
                f"grid_thw describes {patches} patches but pixel values have {pixel_values.shape[0]} rows"
            )
        chunks_per_item = [t for t, _, _ in plan.grid]
        if chunk_positions is None:
            chunk_positions = torch.cat([torch.arange(t) for t in chunks_per_item]).to(pixel_values.device)
        elif chunk_positions.numel() != sum(chunks_per_item):
            raise ValueError(
                f"chunk positions hold {chunk_positions.numel()} entries but grid_thw describes "
                f"{sum(chunks_per_item)} chunks"
            )
        # IVE: (t*h*w, row) -> pooled (t, h*w/4, d) per item
        pooled = self._encode_items(pixel_values, plan, capture=self._wants_capture(kwargs), **kwargs)
        positions = list(chunk_positions.split(chunks_per_item))
        # eq. 2: one token sequence per item (a video, or one image piece): (L, d)
        sequences = [features.flatten(0, 1) for features in pooled]
        threshold = self._compression_threshold(token_compression_threshold)
        for i in (i for i, on in enumerate(plan.compressed) if on):
            # §5.4: (c*n, d) -> (k, d), each kept token at its first chunk's position id
            sequences[i], positions[i] = merge_similar_chunk_tokens(pooled[i], positions[i], threshold)
        # IFA (C-RoPE), items of equal length batched
        outputs = self._aggregate_items(sequences, positions, pooled, plan)
        hidden = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        token_counts = torch.tensor([len(sequence) for sequence in sequences], device=hidden.device)
        return MavorsVisionModelOutput(last_hidden_state=hidden, token_counts=token_counts)

    def _encode_items(
        self, pixel_values: torch.Tensor, plan: MavorsVisionPlan, capture: bool = False, **kwargs
    ) -> list[torch.Tensor]:
        """The IVE of every item, items sharing a patch grid batched: a list of pooled `(t, h*w/s^2, d)`."""
        grid = plan.grid
        items = pixel_values.split([t * h * w for t, h, w in grid])
        rows = [item.view(t, h * w, -1) for item, (t, h, w) in zip(items, grid, strict=True)]
        if capture:
            return self.encode_chunks_for_capture(rows, [(h, w) for _, h, w in grid], **kwargs)
        pooled: list[torch.Tensor | None] = [None] * len(grid)
        # blank ViT micro-batches the rank synchronisation asks for (training/rank_sync.py), run with the last grid
        blank = getattr(self, "_blank_micro_batches", 0)
        last = len(plan.grid_groups) - 1
        for index, ((h, w), members) in enumerate(plan.grid_groups.items()):
            group = torch.cat([rows[i] for i in members]) if len(members) > 1 else rows[members[0]]
            encoded = self.encode_chunks(group, h, w, blank if index == last else 0)
            for i, features in zip(members, encoded.split([grid[i][0] for i in members]), strict=True):
                pooled[i] = features
        return pooled

    def _aggregate_items(
        self,
        sequences: list[torch.Tensor],
        positions: list[torch.Tensor],
        pooled: list[torch.Tensor],
        plan: MavorsVisionPlan,
    ) -> list[torch.Tensor]:
        """The IFA over every item's sequence, items of one length stacked into one batch."""
        if not self.config.ifa_num_hidden_layers:
            return sequences
        outputs = list(sequences)
        # the IFA MLP's token blocks hold no more rows than a ViT micro-batch did (TOKEN_BLOCK at most)
        token_block = min(
            TOKEN_BLOCK, self.config.vision_chunk_batch_size * max(h * w for _, h, w in plan.grid)
        )
        for members in plan.length_groups.values():
            # one item (a whole video): its tokens as they are, without a stacked copy
            batch = (
                torch.stack([sequences[i] for i in members])
                if len(members) > 1
                else sequences[members[0]][None]
            )
            ids = torch.stack([positions[i] for i in members]).to(batch.device)
            # compressed videos carry one position per kept token, uncompressed items one per chunk
            per_chunk = None if plan.compressed[members[0]] else pooled[members[0]].shape[1]
            for i, out in zip(members, self.aggregator(batch, ids, per_chunk, token_block), strict=True):
                outputs[i] = out
        return outputs

    @classmethod
    def from_siglip_pretrained(cls, siglip_dir, **overrides) -> "MavorsVisionModel":
        """Build the vision tower from a `SiglipVisionModel` or `SiglipModel` checkpoint (kernel inflation).

        The 2D patch kernel is replicated `frames_per_chunk` times along time (the forward divides by F), the
        position table, encoder layers and post-layernorm are copied, SigLIP's pooling head is dropped and the
        aggregator starts as the identity. Keyword overrides must name `MavorsVisionConfig` fields; `dtype` and
        `attn_implementation` are passed to the model.
        """
        from .builders import build_vision_from_siglip

        return build_vision_from_siglip(cls, siglip_dir, **overrides)


# ------------------------------------------------------------------------------------------------
# Projector, MavorsModel, MavorsForConditionalGeneration
# ------------------------------------------------------------------------------------------------


class MavorsProjector(nn.Module):
    """Two-layer MLP from the vision width d_V to the LLM width."""

    def __init__(self, config: MavorsConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or features.shape[0] <= TOKEN_BLOCK:
            return self.linear_2(self.act(self.linear_1(features)))
        # without autograd, blocks of tokens: the hidden activation never exists for all tokens at once
        output = features.new_empty(*features.shape[:-1], self.linear_2.out_features)
        for block, out in zip(features.split(TOKEN_BLOCK), output.split(TOKEN_BLOCK), strict=True):
            out.copy_(self.linear_2(self.act(self.linear_1(block))))
        return output


@dataclass
class MavorsModelOutputWithPast(ModelOutput):
    r"""
    Output of [`MavorsModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Last hidden states of the language model.
        past_key_values (`Cache`, *optional*):
            The language model's key/value cache.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the language model layers, when requested.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the language model layers, when requested.
        image_hidden_states (`torch.FloatTensor` of shape `(image tokens, hidden_size)`, *optional*):
            Projected image features that replaced `<|image_pad|>` tokens.
        video_hidden_states (`torch.FloatTensor` of shape `(video tokens, hidden_size)`, *optional*):
            Projected video features that replaced `<|video_pad|>` tokens.
    """

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None
    video_hidden_states: torch.FloatTensor | None = None


@dataclass
class MavorsCausalLMOutputWithPast(ModelOutput):
    r"""
    Output of [`MavorsForConditionalGeneration`].

    Args:
        loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
            Next-token prediction loss, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            Prediction scores of the LM head.
        past_key_values (`Cache`, *optional*):
            The language model's key/value cache.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the language model layers, when requested.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the language model layers, when requested.
        image_hidden_states (`torch.FloatTensor`, *optional*):
            Projected image features.
        video_hidden_states (`torch.FloatTensor`, *optional*):
            Projected video features.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None
    video_hidden_states: torch.FloatTensor | None = None


class MavorsModel(MavorsPreTrainedModel):
    """Vision model + projector + Qwen2 language model (no LM head)."""

    accepts_loss_kwargs = False

    def __init__(self, config: MavorsConfig):
        super().__init__(config)
        self.vision_model = MavorsVisionModel._from_config(config.vision_config)
        self.projector = MavorsProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def _project_per_item(
        self, pixel_values, grid_thw, chunk_positions=None, token_compression_threshold=None, **kwargs
    ) -> MavorsVisionModelOutput:
        """Vision tower + projector; `pooler_output` holds one projected `(tokens, hidden)` tensor per item."""
        vision_outputs = self.vision_model(
            pixel_values,
            grid_thw,
            chunk_positions,
            token_compression_threshold=token_compression_threshold,
            return_dict=True,
            **kwargs,
        )
        features = self.projector(vision_outputs.last_hidden_state)
        vision_outputs.pooler_output = tuple(features.split(vision_outputs.token_counts.tolist()))
        return vision_outputs

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        image_grid_thw: torch.LongTensor,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MavorsVisionModelOutput:
        r"""
        Encode and project image pieces.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum of patches, C*p*p)`): packed image pieces.
            image_grid_thw (`torch.LongTensor` of shape `(pieces, 3)`): `(1, h, w)` per piece, in text order.

        Returns:
            `MavorsVisionModelOutput` with `pooler_output` a tuple of one `(tokens, hidden)` tensor per piece
            (thumbnail or sub-image), `last_hidden_state` the unprojected vision features and `token_counts`; with
            `output_hidden_states` / `output_attentions`, the vision tower's (see `MavorsVisionModel.forward`).
        """
        # a piece is one chunk: token compression never applies, whatever the config says
        return self._project_per_item(pixel_values, image_grid_thw, **kwargs)

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor,
        video_grid_thw: torch.LongTensor,
        video_chunk_positions: torch.LongTensor | None = None,
        token_compression_threshold: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MavorsVisionModelOutput:
        r"""
        Encode and project videos. Step 1 of the token-compression path (see `docs/usage.md`): encode with a
        threshold, build the prompt with `token_counts` placeholders per video, pass this output to `generate` as
        `mm_encoder_outputs={"video": output}`.

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(sum of patches, C*F*p*p)`): packed chunks.
            video_grid_thw (`torch.LongTensor` of shape `(videos, 3)`): `(chunks, h, w)` per video.
            video_chunk_positions (`torch.LongTensor` of shape `(sum of chunks,)`, *optional*): C-RoPE ids.
            token_compression_threshold (`float`, *optional*): merge similar same-index tokens of adjacent chunks
                before the aggregator (paper §5.4); defaults to `config.vision_config.token_compression_threshold`
                (`None`: off). Above 1 nothing merges.

        Returns:
            `MavorsVisionModelOutput` with `pooler_output` a tuple of one `(tokens, hidden)` tensor per video and
            `token_counts` `(videos,)`, the placeholder count each video needs; with `output_hidden_states` /
            `output_attentions`, the vision tower's (see `MavorsVisionModel.forward`).
        """
        return self._project_per_item(
            pixel_values_videos, video_grid_thw, video_chunk_positions, token_compression_threshold, **kwargs
        )

    def get_placeholder_mask(
        self, input_ids, inputs_embeds, token_id: int, features: torch.Tensor, name: str
    ):
        """Boolean mask `(batch, seq, 1)` of the placeholder tokens that `features` replace; checks the count."""
        if input_ids is None:
            token_embedding = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            mask = (inputs_embeds == token_embedding).all(-1)
        else:
            mask = input_ids == token_id
        num_tokens = int(mask.sum())
        if num_tokens != features.shape[0]:
            hint = ""
            if name == "video" and num_tokens > features.shape[0]:
                hint = (
                    "; with token compression on, build the prompt with the counts the model reports: "
                    "`processor(..., video_token_counts=output.token_counts)` or "
                    "`processor.resize_video_placeholders(inputs, output.token_counts)` (docs/usage.md)"
                )
            raise ValueError(
                f"{name} features and {name} placeholder tokens do not match: the text has {num_tokens} placeholder "
                f"tokens (id {token_id}) but the {name} inputs produce {features.shape[0]} features; build inputs with "
                f"MavorsProcessor so each placeholder is expanded to its token count{hint}"
            )
        return mask.unsqueeze(-1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        video_chunk_positions: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        token_compression_threshold: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MavorsModelOutputWithPast:
        r"""
        Args:
            pixel_values, image_grid_thw: packed image pieces and their grids (see `get_image_features`).
            pixel_values_videos, video_grid_thw, video_chunk_positions: packed videos (see `get_video_features`).
            mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
                Already encoded media, keyed `"image"` / `"video"`, as returned by `get_*_features`; `generate`
                passes them so the vision tower runs once, in prefill. A modality comes either as pixel values or
                here, not both.
            token_compression_threshold (`float`, *optional*):
                Token compression of videos given as pixel values (see `get_video_features`); the prompt must then
                hold the reduced placeholder counts.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        encoded = dict(mm_encoder_outputs or {})
        for modality, pixels in (("image", pixel_values), ("video", pixel_values_videos)):
            if pixels is not None and encoded.get(modality) is not None:
                raise ValueError(
                    f"{modality}s came both as pixel values and in mm_encoder_outputs[{modality!r}]; pass one of them"
                )
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if pixel_values is not None:
            encoded["image"] = self.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        if pixel_values_videos is not None:
            encoded["video"] = self.get_video_features(
                pixel_values_videos,
                video_grid_thw,
                video_chunk_positions,
                token_compression_threshold=token_compression_threshold,
                return_dict=True,
            )

        merged = {}
        for modality, token_id in (
            ("image", self.config.image_token_id),
            ("video", self.config.video_token_id),
        ):
            if encoded.get(modality) is None:
                continue
            features = torch.cat(tuple(encoded[modality].pooler_output)).to(
                inputs_embeds.device, inputs_embeds.dtype
            )
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, token_id, features, modality)
            inputs_embeds = inputs_embeds.masked_scatter(mask, features)
            merged[modality] = features

        outputs = self.language_model(
            input_ids=None,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return MavorsModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=merged.get("image"),
            video_hidden_states=merged.get("video"),
        )


class MavorsForConditionalGeneration(MavorsPreTrainedModel, GenerationMixin):
    """Mavors with its LM head: `model(**processor(...))` and `model.generate(**processor(...))`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: MavorsConfig):
        super().__init__(config)
        self.model = MavorsModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module):
        self.lm_head = value

    def get_image_features(self, pixel_values, image_grid_thw, **kwargs):
        """See [`MavorsModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, image_grid_thw, **kwargs)

    def get_video_features(
        self,
        pixel_values_videos,
        video_grid_thw,
        video_chunk_positions=None,
        token_compression_threshold: float | None = None,
        **kwargs,
    ):
        """See [`MavorsModel.get_video_features`]."""
        return self.model.get_video_features(
            pixel_values_videos,
            video_grid_thw,
            video_chunk_positions,
            token_compression_threshold=token_compression_threshold,
            **kwargs,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        video_chunk_positions: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        token_compression_threshold: float | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MavorsCausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Next-token targets; `-100` entries (prompt, padding, placeholders) are ignored.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits for the last `logits_to_keep` positions only (0 = all); `generate` keeps 1.
            Other arguments: see [`MavorsModel.forward`].
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            video_chunk_positions=video_chunk_positions,
            mm_encoder_outputs=mm_encoder_outputs,
            token_compression_threshold=token_compression_threshold,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return MavorsCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            video_hidden_states=outputs.video_hidden_states,
        )

    @classmethod
    def from_vision_text_pretrained(
        cls, siglip_dir, qwen_dir, **overrides
    ) -> "MavorsForConditionalGeneration":
        """Assemble a Stage-1-ready Mavors from a SigLIP checkpoint and a Qwen2 causal-LM checkpoint.

        Keyword overrides naming a `MavorsVisionConfig` field go to the vision config, ones naming a
        `MavorsConfig` field go there; `dtype` and `attn_implementation` are loading options; anything else is a
        `TypeError`. Placeholder ids come from the tokenizer in `qwen_dir` (vision tokens are added, and the
        embeddings resized, if it lacks them). The projector is freshly initialised. Either checkpoint may be a
        local directory or a Hub id (`"google/siglip-so400m-patch14-384"`), looked up with `revision`,
        `cache_dir` and `local_files_only` (or `HF_HUB_OFFLINE=1`).
        """
        from .builders import build_model_from_vision_text

        return build_model_from_vision_text(cls, siglip_dir, qwen_dir, **overrides)


__all__ = [
    "MavorsPreTrainedModel",
    "MavorsVisionModel",
    "MavorsVisionModelOutput",
    "merge_similar_chunk_tokens",
    "MavorsModel",
    "MavorsForConditionalGeneration",
]
