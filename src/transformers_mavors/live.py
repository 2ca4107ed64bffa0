"""Live video sessions: encode each chunk once, ask at any time (docs/live-video.md).

The aggregator (IFA) is causal and its rotary positions are chunk ids, so a chunk's features never depend on
later chunks. A growing video can therefore be encoded chunk by chunk:

- `AggregatorCache`: the IFA's per-layer keys/values of the chunks seen so far. Extending it with a new chunk runs
  the IFA on that chunk's tokens only, attending to the cached keys/values (causal, the new block's mask aligned to
  the bottom right), which gives what the IFA gives on the whole prefix.
- `MavorsVideoSession`: frames in (`append`), questions out (`ask`). Each completed chunk goes through the IVE
  once, its IFA keys/values and projected tokens are cached, and the language model's KV cache of the video prefix
  is extended with its tokens. A question is prefilled on top of that prefix and cropped off afterwards.
- `run_chat`: an interactive loop of questions on one session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache
from transformers.utils import logging

from .configuration_mavors import VIDEO_TOKEN
from .media_io import array_to_rgb_image, describe_input, pil_to_rgb
from .modeling_mavors import TOKEN_BLOCK, MavorsAggregator, rotary_cos_sin, rotate

logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------------
# IFA key/value cache
# ------------------------------------------------------------------------------------------------


class AggregatorCache:
    """Keys and values of every IFA layer for the tokens of the chunks encoded so far (one video).

    `extend(aggregator, hidden, positions)` runs the aggregator on new tokens `(1, n, d)` that come after the
    cached ones: each layer's queries are the new tokens', its keys/values the cached ones followed by the new
    ones, under a causal mask aligned to the bottom right (new token j sees every cached token and new tokens
    0..j). That is the token-level causal mask of `MavorsAggregator.forward` restricted to the new rows, so the
    output equals the rows of a forward over the whole prefix (up to float rounding). Buffers grow by doubling, so
    appending is amortised O(new tokens) in copies.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []  # per layer (1, heads, capacity, head_dim), rotated
        self.values: list[torch.Tensor] = []
        self.num_tokens = 0

    def reset(self) -> None:
        self.keys, self.values, self.num_tokens = [], [], 0

    @property
    def nbytes(self) -> int:
        """Bytes of the cached keys and values (the used part of the buffers)."""
        return sum(
            t[:, :, : self.num_tokens].nelement() * t.element_size() for t in (*self.keys, *self.values)
        )

    def _store(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write a layer's new keys/values after the cached ones; returns the layer's keys/values so far."""
        start, new = self.num_tokens, key.shape[2]
        if layer == len(self.keys):
            capacity = max(2 * new, 1)
            self.keys.append(key.new_empty(*key.shape[:2], capacity, key.shape[3]))
            self.values.append(value.new_empty(*value.shape[:2], capacity, value.shape[3]))
        if start + new > self.keys[layer].shape[2]:
            capacity = max(2 * self.keys[layer].shape[2], start + new)
            for buffers in (self.keys, self.values):
                grown = buffers[layer].new_empty(*buffers[layer].shape[:2], capacity, buffers[layer].shape[3])
                grown[:, :, :start] = buffers[layer][:, :, :start]
                buffers[layer] = grown
        self.keys[layer][:, :, start : start + new] = key
        self.values[layer][:, :, start : start + new] = value
        return self.keys[layer][:, :, : start + new], self.values[layer][:, :, : start + new]

    @torch.no_grad()
    def extend(
        self,
        aggregator: MavorsAggregator,
        hidden_states: torch.Tensor,
        positions: torch.Tensor,
        commit: bool = True,
        token_block: int | None = None,
    ) -> torch.Tensor:
        """IFA output `(1, n, d)` of `n` new tokens `(1, n, d)` with per-token C-RoPE ids `positions` `(1, n)`.

        With `commit=False` the cache is left as it was (a provisional chunk: the padded partial chunk an `ask`
        includes). The IFA must have at least one layer (with none its output is its input; callers skip it).
        """
        config = aggregator.config
        past, new = self.num_tokens, hidden_states.shape[1]
        if config.ifa_position_mode == "token":  # standard RoPE: the token's index in the whole sequence
            positions = torch.arange(past, past + new, device=hidden_states.device)[None]
        head_dim = config.hidden_size // config.ifa_num_attention_heads
        cos, sin = rotary_cos_sin(positions, head_dim, config.ifa_rope_theta, hidden_states.dtype)
        # bottom-right aligned causal mask of the new block over [cached, new] keys; none needed without a past
        mask = None
        if past:
            columns = torch.arange(past + new, device=hidden_states.device)
            mask = columns[None, :] <= past + torch.arange(new, device=hidden_states.device)[:, None]
        saved = [(k, v) for k, v in zip(self.keys, self.values, strict=True)]
        for index, layer in enumerate(aggregator.layers):
            hidden_states = self._layer_step(index, layer, hidden_states, cos, sin, mask, token_block)
        if commit:
            self.num_tokens += new
        else:  # the writes past num_tokens are dead; only grown buffers need putting back
            self.keys, self.values = [k for k, _ in saved], [v for _, v in saved]
        return hidden_states

    def _layer_step(self, index, layer, hidden_states, cos, sin, mask, token_block) -> torch.Tensor:
        """One `MavorsAggregatorLayer` over the new tokens, attending to the cached keys/values (eqs. 3-6)."""
        attention = layer.self_attn
        batch, seq, _ = hidden_states.shape
        shape = (batch, seq, attention.num_heads, attention.head_dim)
        normed = layer.layer_norm1(hidden_states)
        query = rotate(attention.q_proj(normed).view(shape).transpose(1, 2), cos, sin)
        key = rotate(attention.k_proj(normed).view(shape).transpose(1, 2), cos, sin)
        value = attention.v_proj(normed).view(shape).transpose(1, 2)
        keys, values = self._store(index, key, value)
        if mask is None:  # no past: the same call as the full forward's sdpa path
            output = F.scaled_dot_product_attention(
                query, keys, values, is_causal=True, scale=attention.scaling
            )
        else:
            output = F.scaled_dot_product_attention(
                query, keys, values, attn_mask=mask, scale=attention.scaling
            )
        hidden_states = hidden_states + attention.o_proj(output.transpose(1, 2).reshape(batch, seq, -1))
        token_block = token_block or TOKEN_BLOCK
        if seq <= token_block:
            return hidden_states + layer.mlp(layer.layer_norm2(hidden_states))
        for block in hidden_states.split(token_block, dim=1):  # as the layer does: per-token MLP in blocks
            block += layer.mlp(layer.layer_norm2(block))
        return hidden_states


# ------------------------------------------------------------------------------------------------
# The session
# ------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One encoded chunk: its index in the stream, C-RoPE id and pooled IVE tokens `(n, d_V)`."""

    index: int
    position: int
    pooled: torch.Tensor


class MavorsVideoSession:
    """A video that grows while questions are asked about it; each chunk is encoded once.

    ```python
    session = MavorsVideoSession(model, processor, fps=4)
    session.append(frames)                       # (T, H, W, C) array/tensor, list of PIL images, any T
    print(session.ask("What is happening?", max_new_tokens=64))
    session.append(more_frames)                  # continues from the video alone
    ```

    Invariants (tests/test_live.py):

    - `ask(q)` gives what `pipeline("video-text-to-text")` gives on all frames appended so far, with the same
      `fps` and no accelerated playback: the prompt is the processor's one-video chat (the chat template rendered
      and split around the video), a partial last chunk is padded as the processor pads it.
    - Every completed chunk runs the IVE once. An `ask` runs the vision tower only on a pending partial chunk that
      changed since the last `ask` (padded, kept provisionally until its next frame arrives) and otherwise prefills
      only the question's tokens; neither the question nor the answer stays in the cache.
    - Memory is bounded by `max_chunks` (the chunk budget, default the processor's): when a completed chunk would
      exceed it, every other encoded chunk is dropped and from then on only every 2nd (4th, ...) chunk of the
      stream is encoded (chunk thinning, see docs/live-video.md). Kept chunks keep their C-RoPE ids, so the model
      sees the gaps as accelerated playback shows them.
    - The frame size is fixed by the first frame; a frame of another size is a `ValueError`.

    Thread safety: every public method takes the session's lock, so an `append` from a capture thread waits while
    an `ask` (streaming or not) runs in another, and vice versa. Sessions sharing one model may be used from
    different threads as far as PyTorch inference allows; nothing here writes module state.

    Args:
        model (`MavorsForConditionalGeneration`): the model; token compression must be off (it is not incremental:
            a merged run changes the values of earlier chunks' tokens).
        processor (`MavorsProcessor`): its video processor turns frames into chunk rows, its chat template and
            tokenizer build the prompt.
        fps (`float`, *optional*): frame rate of appended frames (frame i is at i / fps) and, with timestamps, the
            fixed rate they are resampled to. Defaults to the processor's `fps`.
        max_chunks (`int`, *optional*): chunk budget; defaults to the processor's `max_chunks`.
        token_compression_threshold (`float`, *optional*): must be `None` (or above 1); compression raises.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        fps: float | None = None,
        max_chunks: int | None = None,
        token_compression_threshold: float | None = None,
    ) -> None:
        vision = model.model.vision_model
        if vision._compression_threshold(token_compression_threshold) is not None:
            raise ValueError(
                "token compression (paper §5.4) does not work incrementally: a merged run's value changes when a "
                "later chunk joins it, so earlier chunks' tokens would change after they were cached. Use "
                "token_compression_threshold=None (and a checkpoint with it off), or the offline pipeline"
            )
        check = getattr(processor, "check_model_config", None)
        if check is not None:
            check(model.config)
        self.model, self.processor = model, processor
        video_processor = processor.video_processor
        self.fps = float(fps if fps is not None else video_processor.fps)
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.max_chunks = int(max_chunks if max_chunks is not None else video_processor.max_chunks)
        if self.max_chunks < 2:
            raise ValueError(f"max_chunks must be >= 2 (thinning halves the chunks kept), got {max_chunks!r}")
        self.frames_per_chunk = video_processor.frames_per_chunk
        self._lock = threading.RLock()
        self._prefix_text, _ = self._split_prompt("")
        self._prefix_ids = self._tokenize(self._prefix_text)
        self._frozen = False
        self.reset()

    # -- public state ------------------------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Frames of the stream so far at the session's fps (after resampling, when timestamps were given)."""
        return self._num_targets

    @property
    def num_chunks(self) -> int:
        """Chunks encoded and cached (complete ones; after thinning, the kept ones)."""
        return len(self._chunks)

    @property
    def playback_speed(self) -> float:
        """1, or 2, 4, ... after chunk thinning (one stream chunk in that many is kept); for `from_video`, the
        processor's accelerated-playback speed."""
        return self._speed if self._frozen else float(self._stride)

    @property
    def chunk_positions(self) -> list[int]:
        """C-RoPE id of every cached chunk."""
        return [chunk.position for chunk in self._chunks]

    @property
    def cached_bytes(self) -> dict[str, int]:
        """Bytes held per part of the cached state (pooled IVE tokens, IFA keys/values, projected tokens, LLM cache,
        pending frames)."""
        with self._lock:
            return self._cached_bytes()

    def _cached_bytes(self) -> dict[str, int]:
        llm = 0
        for layer in getattr(self._llm_cache, "layers", []) if self._llm_cache is not None else []:
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(tensor, torch.Tensor):
                    llm += tensor.nelement() * tensor.element_size()
        return {
            "ive": sum(c.pooled.nelement() * c.pooled.element_size() for c in self._chunks),
            "ifa": self._ifa_cache.nbytes,
            "projected": sum(t.nelement() * t.element_size() for t in self._features),
            "llm": llm,
            "pending_frames": sum(image.width * image.height * 3 for image in self._pending),
        }

    def reset(self) -> None:
        """Forget every frame, chunk and cache entry (the model and processor stay)."""
        with self._lock:
            self._frame_size: tuple[int, int] | None = None
            self._num_targets = 0
            self._stride = 1
            self._pending: list[PIL.Image.Image] = []
            self._chunks: list[_Chunk] = []
            self._features: list[torch.Tensor] = []
            self._ifa_cache = AggregatorCache()
            self._llm_cache: DynamicCache | None = None
            self._provisional_frames = self._provisional_tokens = 0
            self._timed: bool | None = None
            self._last_time: float | None = None
            self._start_time: float | None = None
            self._last_frame: PIL.Image.Image | None = None
            self._frozen = False
            self._speed = 1.0

    # -- frames in ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def append(self, frames: Any, timestamps: Sequence[float] | None = None) -> None:
        """Add frames to the video: a `(T, H, W, C)` array or tensor, a list of PIL images or `(H, W, C)` arrays, or
        one frame. Every chunk of `frames_per_chunk` frames this completes is encoded (IVE once, IFA from the
        cache) and appended to the language model's cache.

        Without `timestamps`, frame i of the stream is at i / fps. With them (seconds, one per frame, never
        decreasing, the stream's first frame at its own time 0), frames are resampled to the session's fps as the
        processor resamples a file: target k at k / fps shows the last frame whose time is not later.
        """
        with self._lock:
            if self._frozen:
                raise ValueError(
                    "this session was built from a whole video (from_video); its chunks follow that video's "
                    "accelerated playback, so frames cannot be appended. Start a MavorsVideoSession to stream"
                )
            images = self._to_frames(frames)
            if timestamps is not None:
                timestamps = [float(t) for t in timestamps]
                if len(timestamps) != len(images):
                    raise ValueError(f"got {len(timestamps)} timestamps for {len(images)} frames")
            timed = timestamps is not None
            if images and self._timed is not None and timed != self._timed:
                raise ValueError(
                    "pass timestamps with every append or with none: this session was started "
                    f"{'with' if self._timed else 'without'} them"
                )
            for offset, image in enumerate(images):
                image = self._check_frame(image, self._num_targets + offset)
                self._timed = timed
                if timed:
                    self._resample(image, timestamps[offset])
                else:
                    self._add_target(image)

    def _to_frames(self, frames: Any) -> list[Any]:
        if isinstance(frames, PIL.Image.Image):
            return [frames]
        if isinstance(frames, (np.ndarray, torch.Tensor)):
            if frames.ndim == 4:
                return list(frames)
            if frames.ndim in (2, 3):
                return [frames]
            raise ValueError(
                f"frames must be (T, H, W, C) or one (H, W, C) frame, got shape {tuple(frames.shape)}"
            )
        if isinstance(frames, (list, tuple)):
            return list(frames)
        raise TypeError(
            f"frames must be a (T, H, W, C) array or tensor, a list of PIL images or arrays, or one frame; got "
            f"{describe_input(frames)}"
        )

    def _check_frame(self, frame: Any, index: int) -> PIL.Image.Image:
        """The frame as an RGB PIL image (as the processor reads frames), checked against the first frame's size."""
        if isinstance(frame, PIL.Image.Image):
            image = pil_to_rgb(frame)
        elif isinstance(frame, (np.ndarray, torch.Tensor)):
            image = array_to_rgb_image(frame, f"frame {index}")
        else:
            raise TypeError(f"frame {index} is a {type(frame).__name__}, not a PIL image or an array")
        if self._frame_size is None:
            self._frame_size = image.size
        elif image.size != self._frame_size:
            width, height = self._frame_size
            raise ValueError(
                f"frame {index} is {image.width}x{image.height} but this session's resolution was fixed by its "
                f"first frame at {width}x{height}; reset() the session (or start a new one) for another size"
            )
        return image

    def _resample(self, image: PIL.Image.Image, time: float) -> None:
        """Fixed-fps transcode of timestamped frames: targets before `time` show the previous frame."""
        if self._last_time is not None and time < self._last_time:
            raise ValueError(f"timestamps must not decrease: got {time} after {self._last_time}")
        if self._start_time is None:
            self._start_time = time
        elapsed = time - self._start_time
        # targets k with k / fps < elapsed still show the previous frame (the 1e-6 as the processor's sampling)
        while self._last_frame is not None and self._num_targets / self.fps < elapsed - 1e-6:
            self._add_target(self._last_frame)
        # targets at this frame's time (at most one) show it
        if self._num_targets / self.fps <= elapsed + 1e-6:
            self._add_target(image)
        self._last_frame, self._last_time = image, time

    def _add_target(self, image: PIL.Image.Image) -> None:
        """One frame at the session's fps: kept for its chunk (unless thinning skips the chunk)."""
        chunk = self._num_targets // self.frames_per_chunk
        self._num_targets += 1
        self._drop_provisional()  # the pending chunk changes (or a skipped one starts): its padded version is stale
        if chunk % self._stride:
            return  # a chunk thinning skips: never encoded
        self._pending.append(image)
        if len(self._pending) == self.frames_per_chunk:
            frames, self._pending = self._pending, []
            self._commit_chunk(chunk, frames)

    # -- encoding ----------------------------------------------------------------------------------------------

    def _pooled_chunks(self, frames: list[PIL.Image.Image]) -> torch.Tensor:
        """IVE of frames (one chunk, or a whole video): the processor's rows -> pooled `(chunks, n, d_V)`."""
        video = self._process(frames, fps=self.fps, max_chunks=-(-len(frames) // self.frames_per_chunk))
        return self._encode_rows(video["pixel_values_videos"], video["video_grid_thw"][0].tolist())

    def _process(self, video: Any, **options: Any) -> Any:
        """The processor's video path. Outside inference mode even under `torch.inference_mode()`: the processor
        packs a file's chunks on a worker thread, which may not write to an inference tensor."""
        with torch.inference_mode(False):
            return self.processor.video_processor(video, return_tensors="pt", **options)

    def _encode_rows(self, rows: torch.Tensor, grid: list[int]) -> torch.Tensor:
        vision = self.model.model.vision_model
        chunks, height, width = grid
        rows = rows.to(vision.device, vision.dtype).view(chunks, height * width, -1)
        return vision.encode_chunks(rows, height, width)

    def _aggregate(self, pooled: list[torch.Tensor], positions: list[int], commit: bool) -> torch.Tensor:
        """IFA of chunks `(n, d_V)` each that come after the cached ones -> `(chunks * n, d_V)`."""
        vision = self.model.model.vision_model
        hidden = torch.cat(pooled)[None]
        if not vision.config.ifa_num_hidden_layers:
            return hidden[0]
        ids = torch.tensor(positions, device=hidden.device).repeat_interleave(pooled[0].shape[0])[None]
        return self._ifa_cache.extend(vision.aggregator, hidden, ids, commit=commit)[0]

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.projector(features)

    def _llm_extend(self, embeds: torch.Tensor) -> None:
        """Prefill `(tokens, hidden)` embeddings onto the video-prefix cache (the text prefix first, once)."""
        if self._llm_cache is None:
            self._llm_cache = DynamicCache(config=self.model.config.get_text_config())
            ids = torch.tensor([self._prefix_ids], device=self.model.device)
            prefix = self.model.get_input_embeddings()(ids)
            embeds = torch.cat((prefix[0], embeds.to(prefix.dtype)))
        self.model.model.language_model(
            inputs_embeds=embeds[None], past_key_values=self._llm_cache, use_cache=True
        )

    def _commit_chunk(self, index: int, frames: list[PIL.Image.Image]) -> None:
        """A completed chunk: IVE once, IFA keys/values cached, tokens projected and prefilled."""
        if len(self._chunks) == self.max_chunks:
            self._thin()
            if index % self._stride:
                return
        pooled = self._pooled_chunks(frames)[0]
        position = index
        self._chunks.append(_Chunk(index, position, pooled))
        features = self._project(self._aggregate([pooled], [position], commit=True))
        self._features.append(features)
        self._llm_extend(features)

    def _thin(self) -> None:
        """Keep every other cached chunk (the ones whose stream index is a multiple of the doubled stride), then
        rebuild the IFA cache and the language model's prefix from their pooled IVE tokens (no IVE runs)."""
        self._stride *= 2
        self._chunks = [chunk for chunk in self._chunks if chunk.index % self._stride == 0]
        logger.info(
            f"chunk budget of {self.max_chunks} reached: keeping {len(self._chunks)} chunks, one stream chunk in "
            f"{self._stride} from now on"
        )
        self._rebuild()

    def _rebuild(self) -> None:
        self._ifa_cache.reset()
        self._llm_cache = None
        self._provisional_frames = self._provisional_tokens = 0
        features = self._project(
            self._aggregate([c.pooled for c in self._chunks], [c.position for c in self._chunks], commit=True)
        )
        self._features = list(features.split(self._chunks[0].pooled.shape[0]))
        self._llm_extend(features)

    def _encode_pending(self) -> None:
        """Put the pending partial chunk, padded, on the language model's cache (provisionally: its IFA keys/values
        are not cached, its LLM entries are cropped once a frame arrives). Encoded once per state of the chunk."""
        if not self._pending or self._provisional_frames == len(self._pending):
            return
        self._drop_provisional()
        pooled = self._pooled_chunks(self._pending)[0]
        position = self._num_targets // self.frames_per_chunk
        features = self._project(self._aggregate([pooled], [position], commit=False))
        self._llm_extend(features)
        self._provisional_frames, self._provisional_tokens = len(self._pending), features.shape[0]

    def _drop_provisional(self) -> None:
        if self._provisional_tokens:
            self._crop_llm(self._llm_cache.get_seq_length() - self._provisional_tokens)
        self._provisional_frames = self._provisional_tokens = 0

    def _crop_llm(self, length: int) -> None:
        extra = self._llm_cache.get_seq_length() - length
        if extra > 0:
            self._llm_cache.crop(-extra)

    # -- questions out -----------------------------------------------------------------------------------------

    def _split_prompt(self, question: str) -> tuple[str, str]:
        """The processor's one-video chat rendered by its template, split around the video marker."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if rendered.count(VIDEO_TOKEN) != 1:
            raise ValueError(
                f"the chat template rendered {rendered.count(VIDEO_TOKEN)} video markers for a one-video chat; "
                "a live session needs exactly one"
            )
        before, after = rendered.split(VIDEO_TOKEN)
        return before, after

    def _tokenize(self, text: str) -> list[int]:
        return self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, question: str) -> list[int]:
        """The `input_ids` the processor builds for a one-video chat with `question` about the current video."""
        with self._lock:
            return self._prompt_parts(question)[0]

    def _prompt_parts(self, question: str) -> tuple[list[int], list[int], int]:
        """Full prompt ids, the ids after the video, and the video's placeholder count (pending chunk included)."""
        before, after = self._split_prompt(question)
        if before != self._prefix_text:
            raise ValueError(
                "the chat template puts question-dependent text before the video; a session caches the text before "
                "the video once, so it needs a template where the question comes after it"
            )
        tokens = sum(f.shape[0] for f in self._features) + (self._pending_tokens() if self._pending else 0)
        suffix = self._tokenize(after)
        video_token_id = self.processor.video_token_id
        return self._prefix_ids + [video_token_id] * tokens + suffix, suffix, tokens

    def _pending_tokens(self) -> int:
        height, width = self._frame_size[1], self._frame_size[0]
        layout = self.processor.video_processor.get_video_layout(
            len(self._pending), height, width, fps=self.fps, max_chunks=1
        )
        _, h, w = layout["grid_thw"]
        merge = self.processor.video_processor.spatial_merge_size
        return (h // merge) * (w // merge)

    @torch.no_grad()
    def ask(self, text: str, **generate_kwargs: Any) -> str:
        """Answer `text` about every frame appended so far; returns the new text, special tokens skipped.

        A pending partial chunk is encoded padded (as the processor pads a video's last chunk), once per state of
        that chunk: its IFA keys/values are not cached, its tokens stay on the language model's cache until a frame
        arrives. The question's tokens are prefilled on the video-prefix cache, which is cropped back afterwards. `generate_kwargs` go to `model.generate` (`max_new_tokens`, `do_sample`,
        `streamer`, `logits_processor`, ...).
        """
        if not isinstance(text, str):
            raise TypeError(f"the question must be a string, got {type(text).__name__}")
        with self._lock:
            if not self._chunks and not self._pending:
                raise ValueError("the session holds no frames yet; append frames before asking")
            ids, suffix, _ = self._prompt_parts(text)
            self._encode_pending()
            keep = self._llm_cache.get_seq_length()  # the video prefix, the pending chunk included
            try:
                embeds = self.model.get_input_embeddings()(torch.tensor([suffix], device=self.model.device))[
                    0
                ]
                # everything but the last prompt token here; generate prefills that one and decodes
                self._llm_extend(embeds[:-1])
                input_ids = torch.tensor([ids], device=self.model.device)
                generate_kwargs.setdefault("attention_mask", torch.ones_like(input_ids))
                output = self.model.generate(
                    input_ids=input_ids, past_key_values=self._llm_cache, **generate_kwargs
                )
            finally:  # drop the question and the answer: the cache holds the video alone again
                self._crop_llm(keep)
            sequences = output.sequences if hasattr(output, "sequences") else output
            return self.processor.post_process_image_text_to_text(
                sequences[:, input_ids.shape[1] :], skip_special_tokens=True
            )[0]

    # -- whole videos ------------------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def from_video(
        cls,
        model: Any,
        processor: Any,
        path_or_frames: Any,
        fps: float | None = None,
        max_chunks: int | None = None,
        video_metadata: Any = None,
    ) -> MavorsVideoSession:
        """Encode a whole video once (a file, or frames) for any number of `ask` calls.

        The video goes through the processor as the pipeline sends it (fixed-fps sampling, accelerated playback
        beyond `max_chunks`, the last chunk padded), so every `ask` equals the pipeline's answer on that video with
        the same options. Such a session cannot be appended to.
        """
        session = cls(model, processor, fps=fps, max_chunks=max_chunks)
        options = {"fps": session.fps, "max_chunks": session.max_chunks, "return_metadata": True}
        if video_metadata is not None:
            options["video_metadata"] = video_metadata
        video = session._process(path_or_frames, **options)
        grid = video["video_grid_thw"][0].tolist()
        metadata = video["video_metadata"][0]
        positions = video["video_chunk_positions"].tolist()
        pooled = session._encode_rows(video["pixel_values_videos"], grid)
        with session._lock:
            session._frame_size = (metadata.width, metadata.height)
            session._num_targets = metadata.num_frames
            session._speed = float(metadata.playback_speed)
            session._chunks = [
                _Chunk(i, p, chunk) for i, (p, chunk) in enumerate(zip(positions, pooled, strict=True))
            ]
            session._rebuild()
            session._frozen = True
        return session


# ------------------------------------------------------------------------------------------------
# Interactive loop
# ------------------------------------------------------------------------------------------------


def run_chat(
    session: MavorsVideoSession,
    read_line: Callable[[str], str] = input,
    write: Callable[[str], Any] = print,
    prompt: str = "> ",
    **generate_kwargs: Any,
) -> int:
    """Ask questions about one encoded video until an empty line or end of input; returns the questions answered.

    `read_line(prompt)` reads a question (EOF, as `EOFError`, or an empty line ends the loop), `write(answer)`
    shows the answer. `generate_kwargs` go to every `session.ask`.
    """
    answered = 0
    while True:
        try:
            question = read_line(prompt)
        except EOFError:
            break
        if not question or not question.strip():
            break
        write(session.ask(question.strip(), **generate_kwargs))
        answered += 1
    return answered


__all__ = ["AggregatorCache", "MavorsVideoSession", "run_chat"]
