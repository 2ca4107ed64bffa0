"""Keeping the ranks of a multi-process job in step through the vision tower (DDP, DeepSpeed, FSDP).

Mavors' vision work depends on the data: a text-only batch never calls the vision tower, and a video of 9 chunks
runs the ViT for more micro-batches than one of 2 (`MavorsVisionPlan`). Two distributed engines need the ranks to
agree anyway:

- **DDP and ZeRO-2** reduce the gradients of every parameter each step, in buckets filled in the order gradients
  become ready; a rank whose batch left the vision tower unused has no gradient to send (DDP with
  `find_unused_parameters=False` fails), and a rank that ran image and video in another order fills its buckets
  in another order (ZeRO-2's gloo collectives then disagree on sizes).
- **Sharded weights** (DeepSpeed ZeRO-3, FSDP2) gather each layer's weights when the layer runs, forward and
  backward, with a collective every rank must join in the same order; a rank that runs a layer fewer times than
  another leaves a gather unanswered and the job hangs or fails (QwenLM #126, DeepSpeed #6438).

`synchronize_vision_calls(model)` installs forward hooks that make both hold without touching the model's code:

- *media for every modality, in one order*: in a training forward (and, with sharded weights, in every
  prefill), each modality the batch lacks is encoded from one tiny blank item and its projected features are
  added to the input embeddings with weight 0: a blank image when the forward starts (before the forward's own
  videos), a blank video just before the language model (after its own images). Every rank then calls the
  vision tower and projector once per modality, images first, and every parameter gets a gradient; the loss is
  unchanged.
- *equal call counts* (sharded weights only, detected from the model: ZeRO-3 partitioned parameters, FSDP2
  `fully_shard` modules or DTensors): before each vision-tower call the ranks agree (an all-reduce of
  `MavorsVisionModel.plan(...)`'s counts) on the most ViT micro-batches and IFA calls any rank needs. A rank
  with fewer runs the missing ViT micro-batches on a blank chunk inside the tower's own loop, after its real
  ones and through the same graph (`encode_chunks(..., blank_micro_batches=n)`), so forward and backward visit
  the layers in the same order on every rank; the missing IFA calls follow its own, added with weight 0.

`MavorsTrainer`, `MavorsSFTTrainer` and `MavorsDPOTrainer` install it on their model (and DPO's reference model).
A custom training loop calls it once on the model, before or after `accelerator.prepare(...)`:

```python
from transformers_mavors.training import synchronize_vision_calls
sync = synchronize_vision_calls(model)   # idempotent; sync.remove() takes the hooks off again
```
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.utils import logging

from ..modeling_mavors import MavorsModel, MavorsVisionModel

logger = logging.get_logger(__name__)


def distributed_world_size() -> int:
    """Size of the default process group, 1 outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def has_sharded_weights(module: nn.Module) -> bool:
    """Whether parts of `module` gather their weights from shards when they run (ZeRO-3, FSDP2, FSDP1).

    FSDP2 swaps a module's DTensor parameters for plain tensors while it runs, so the `fully_shard` modules inside
    are looked for as well as DTensor (or DeepSpeed-partitioned, or FSDP1-flattened) parameters.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover (torch < 2.6)
        FSDPModule = ()  # noqa: N806
    if any(isinstance(m, FSDPModule) for m in module.modules()):
        return True
    return any(
        hasattr(weight, "ds_id")  # DeepSpeed ZeRO-3 partitioned parameter
        or type(weight).__name__ == "DTensor"  # FSDP2 (fully_shard) outside the module's forward
        or getattr(weight, "_fsdp_flattened", False)  # FSDP1
        for weight in module.parameters()
    )


def _bound_arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    return inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments


def _is_prefill(arguments: dict) -> bool:
    cache = arguments.get("past_key_values")
    return cache is None or cache.get_seq_length() == 0


@dataclass
class _ForwardState:
    model: MavorsModel
    dummy_media: bool = False
    present: set[str] = field(default_factory=set)
    term: torch.Tensor | None = None  # zero-weighted sum of the blank items encoded so far


class VisionCallSync:
    """The hooks of `synchronize_vision_calls` on one model; `remove()` takes them off."""

    def __init__(self, model: nn.Module | None, pad_calls: bool | None = None, dummy_media: bool = True):
        self.pad_calls = pad_calls
        self.dummy_media = dummy_media
        self._handles: list = []
        self._forwards: list[_ForwardState] = []  # MavorsModel forwards under way, innermost last
        self._pending: list[
            tuple[torch.Tensor, int]
        ] = []  # vision calls under way: (idle term, IFA calls due)
        for module in model.modules() if model is not None else ():
            if isinstance(module, MavorsModel):
                self._attach_model(module)
            elif isinstance(module, MavorsVisionModel):
                self._attach_vision(module)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __deepcopy__(self, memo):
        # a deep copy of a hooked model (e.g. a DPO reference copy) keeps working hooks bound to a fresh instance;
        # removing hooks stays the business of the original
        return VisionCallSync(None, self.pad_calls, self.dummy_media)

    # -- media for every modality -------------------------------------------------------------------------------

    def _attach_model(self, mavors: MavorsModel) -> None:
        self._handles.append(mavors.register_forward_pre_hook(self._start_forward, with_kwargs=True))
        self._handles.append(mavors.register_forward_hook(self._end_forward, always_call=True))
        self._handles.append(
            mavors.language_model.register_forward_pre_hook(self._add_missing_media, with_kwargs=True)
        )

    def _start_forward(self, mavors: MavorsModel, args: tuple, kwargs: dict) -> None:
        arguments = _bound_arguments(mavors, args, kwargs)
        encoded = arguments.get("mm_encoder_outputs") or {}
        present = {
            modality
            for modality, key in (("image", "pixel_values"), ("video", "pixel_values_videos"))
            if arguments.get(key) is not None or encoded.get(modality) is not None
        }
        training = mavors.training and torch.is_grad_enabled()
        sharded_prefill = self._pads(mavors.vision_model) and _is_prefill(arguments)
        state = _ForwardState(mavors, self.dummy_media and (training or sharded_prefill), present)
        self._forwards.append(state)
        if state.dummy_media and "image" not in present:
            # a blank image now, before the forward encodes its own videos: every rank calls the tower for images
            # first and videos second (the forward's own order), so sharded engines gather, and ZeRO-2 buckets
            # gradients, in one order on every rank
            state.term = self._encode_blank(mavors, "image")

    def _end_forward(self, mavors: MavorsModel, args: tuple, output) -> None:
        if self._forwards and self._forwards[-1].model is mavors:
            self._forwards.pop()

    def _add_missing_media(self, language_model: nn.Module, args: tuple, kwargs: dict):
        state = self._forwards[-1] if self._forwards else None
        if state is None or not state.dummy_media or kwargs.get("inputs_embeds") is None:
            return None
        embeds = kwargs["inputs_embeds"]
        term = embeds.new_zeros(()) if state.term is None else state.term.to(embeds.dtype)
        if "video" not in state.present:  # after the forward's own images, as a real video would come
            term = term + self._encode_blank(state.model, "video").to(embeds.dtype)
        state.term = None
        return args, {**kwargs, "inputs_embeds": embeds + term}

    @staticmethod
    def _encode_blank(mavors: MavorsModel, modality: str) -> torch.Tensor:
        """0 x the features of one blank `modality` item of the smallest grid (a scalar tied to every weight)."""
        config = mavors.config.vision_config
        side = config.spatial_merge_size
        weight = next(mavors.vision_model.parameters())
        frames = 1 if modality == "image" else config.frames_per_chunk
        grid = torch.tensor([[1, side, side]], device=weight.device)
        rows = torch.zeros(
            side * side, config.num_channels * frames * config.patch_size**2, device=weight.device
        )
        encode = mavors.get_image_features if modality == "image" else mavors.get_video_features
        return 0.0 * encode(rows, grid, return_dict=True).pooler_output[0].sum()

    # -- equal call counts --------------------------------------------------------------------------------------

    def _attach_vision(self, vision: MavorsVisionModel) -> None:
        self._handles.append(vision.register_forward_pre_hook(self._before_vision, with_kwargs=True))
        self._handles.append(
            vision.register_forward_hook(self._after_vision, with_kwargs=True, always_call=True)
        )

    def _pads(self, vision: MavorsVisionModel) -> bool:
        """Sharded mode: inside a process group whose vision weights are sharded (or `pad_calls=True`)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return False
        return has_sharded_weights(vision) if self.pad_calls is None else self.pad_calls

    def _before_vision(self, vision: MavorsVisionModel, args: tuple, kwargs: dict) -> None:
        if not self._pads(vision):
            return
        if distributed_world_size() == 1:
            self._pending.append((None, 0))
            return
        arguments = _bound_arguments(vision, args, kwargs)
        plan = vision.plan(arguments["grid_thw"], arguments.get("token_compression_threshold"))
        pixels = arguments["pixel_values"]
        counts = torch.tensor([plan.num_encoder_calls, plan.num_aggregator_calls], device=pixels.device)
        most = counts.clone()
        torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
        missing_encoder, missing_aggregator = (most - counts).tolist()
        # the missing ViT micro-batches run inside the tower's own loop, after its real ones and through the same
        # graph (`encode_chunks(blank_micro_batches=...)`), so forward and backward visit the layers alike on
        # every rank; the missing IFA calls follow the tower's own
        vision._blank_micro_batches = missing_encoder
        self._pending.append((pixels.new_zeros(()), missing_aggregator))

    def _after_vision(self, vision: MavorsVisionModel, args: tuple, kwargs: dict, output):
        if not self._pads(vision) or not self._pending:
            return None
        term, missing_aggregator = self._pending.pop()
        vision._blank_micro_batches = 0
        if output is None or term is None:  # the call raised, or a process group of one: nothing to pad
            return None
        hidden = output.last_hidden_state
        tokens = hidden.new_zeros(1, 1, vision.config.hidden_size)
        positions = torch.zeros(1, 1, dtype=torch.long, device=hidden.device)
        for _ in range(missing_aggregator):
            term = term + 0.0 * vision.aggregator(tokens, positions).sum()
        output.last_hidden_state = hidden + term.to(hidden.dtype)
        return output


def synchronize_vision_calls(
    model: nn.Module, pad_calls: bool | None = None, dummy_media: bool = True
) -> VisionCallSync:
    """Keep every rank's vision-tower calls in step (see the module docstring); returns the installed hooks.

    Args:
        model: a Mavors model, or anything holding one (a PEFT model, a DPO policy, a DeepSpeed engine's module).
        pad_calls: even out ViT / IFA call counts across ranks; `None` (default) does it exactly when the vision
            weights are sharded (ZeRO-3, FSDP), `True` / `False` force it on or off (tests, debugging).
        dummy_media: encode a blank item for each modality a training batch lacks (needed by DDP and by sharded
            engines; `False` only to show what happens without it).

    Calling it again on the same model replaces the earlier hooks.
    """
    previous = getattr(model, "_mavors_vision_call_sync", None)
    if previous is not None:
        previous.remove()
    sync = VisionCallSync(model, pad_calls=pad_calls, dummy_media=dummy_media)
    if not sync._handles:
        raise TypeError(
            f"synchronize_vision_calls found no MavorsModel or MavorsVisionModel inside {type(model).__name__}"
        )
    model._mavors_vision_call_sync = sync
    return sync


__all__ = [
    "VisionCallSync",
    "distributed_world_size",
    "has_sharded_weights",
    "synchronize_vision_calls",
]
