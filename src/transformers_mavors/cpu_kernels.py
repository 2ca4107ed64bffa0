"""oneDNN GEMMs with fused epilogues for the vision tower's CPU inference (`fused_cpu_kernels`, docs/performance.md).

On CPU, `nn.Linear` runs MKL's sgemm after copying the bias into the output, and SigLIP's GELU and residual adds
are each one more pass over a `(rows, width)` activation. oneDNN's inner-product primitive, reached through the op
torch's own CPU compiler (inductor) emits, `torch.ops.mkldnn._linear_pointwise`, takes the bias, a GELU or an
added residual as post-ops of the GEMM, so none of those passes exists. Its fp32 GEMM is also much faster than
MKL's on AMD processors, where MKL takes its AVX2 code path (2.0x on the 2-core AMD EPYC of docs/performance.md).

The path is inference only: the op has no autograd formula, so it runs only while no gradient is recorded, on
plain `nn.Linear`/`nn.LayerNorm` modules with ordinary fp32/bf16 CPU weights and no hooks. Anything else (training,
PEFT adapters, quantized or sharded weights, accelerate offload hooks, another device) takes transformers' modules
unchanged. Results agree with the unfused path to fp32 rounding (1e-5 in the tests).
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipEncoderLayer, SiglipMLP

# transformers' activation name -> (oneDNN post-op, its algorithm); other activations run after the GEMM
_FUSED_ACTIVATIONS = {"gelu_pytorch_tanh": ("gelu", "tanh"), "gelu": ("gelu", "none")}
_DTYPES = (torch.float32, torch.bfloat16)


# set by `unfused_cpu_kernels()`: the trainers run all of `train()` unfused (see there)
_UNFUSED = contextvars.ContextVar("transformers_mavors_unfused_cpu_kernels", default=False)


@contextlib.contextmanager
def unfused_cpu_kernels():
    """Run transformers' modules inside the block even where the fused path would apply.

    The Mavors trainers wrap `train()` in it: a DPO reference model, or an evaluation during training, runs
    without autograd yet must compute exactly what the policy's training forward computes (at step 0 DPO's
    rewards are then exactly zero).
    """
    token = _UNFUSED.set(True)
    try:
        yield
    finally:
        _UNFUSED.reset(token)


def onednn_available() -> bool:
    """Whether this torch build can run oneDNN's fused linear (x86/aarch64 CPU builds with mkldnn)."""
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _plain_parameter(tensor: torch.Tensor | None) -> bool:
    """An ordinary dense CPU tensor: not a tensor subclass (quantized, DTensor), not a DeepSpeed partition."""
    if tensor is None:
        return True
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    return (
        type(data) is torch.Tensor
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and tensor.dtype in _DTYPES
        and not hasattr(tensor, "ds_id")
    )


def unhooked(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"))


def fusable_linear(module: nn.Module) -> bool:
    """A plain `nn.Linear` whose forward oneDNN may replace without changing what it computes."""
    return (
        type(module) is nn.Linear
        and unhooked(module)
        and _plain_parameter(module.weight)
        and _plain_parameter(module.bias)
    )


def fused_path_applies(hidden: torch.Tensor, enabled: bool) -> bool:
    """The conditions every fused call shares: switched on, no autograd, a CPU fp32/bf16 activation, oneDNN."""
    return (
        enabled
        and not torch.is_grad_enabled()
        and not _UNFUSED.get()
        and hidden.device.type == "cpu"
        and hidden.dtype in _DTYPES
        and onednn_available()
        and not _global_hooks()
    )


def _global_hooks() -> bool:
    """Whether `nn.modules.module.register_module_forward_hook` (or its pre-hook) is in force anywhere."""
    registry = nn.modules.module
    return bool(
        getattr(registry, "_global_forward_hooks", None)
        or getattr(registry, "_global_forward_pre_hooks", None)
    )


def fused_linear(
    module: nn.Linear,
    hidden: torch.Tensor,
    enabled: bool,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`residual + act(module(hidden))` (each part optional), one oneDNN GEMM with epilogues when allowed.

    `activation` is a transformers activation name (`config.hidden_act`); GELU fuses, anything else runs after
    the GEMM. Outside the fused path this is the module's own forward, then the activation and the add.
    """
    post_op = _FUSED_ACTIVATIONS.get(activation) if residual is None else None
    if fused_path_applies(hidden, enabled) and fusable_linear(module) and module.weight.dtype == hidden.dtype:
        hidden = hidden.contiguous()
        if residual is not None and residual.shape[:-1] == hidden.shape[:-1] and activation is None:
            return torch.ops.mkldnn._linear_pointwise.binary(
                hidden, residual.contiguous(), module.weight, module.bias, "add"
            )
        attr, algorithm = post_op or ("none", "")
        out = torch.ops.mkldnn._linear_pointwise(hidden, module.weight, module.bias, attr, [], algorithm)
        if activation is not None and post_op is None:
            out = _activation(activation)(out)
        return out if residual is None else out.add_(residual)
    out = module(hidden)
    if activation is not None:
        out = _activation(activation)(out)
    return out if residual is None else residual + out


def _activation(name: str) -> nn.Module:
    return ACT2FN[name]


def patch_gemm(
    rows: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, scale: float, enabled: bool
) -> torch.Tensor:
    """eq. 1's `bias + scale * rows @ kernel^T`, `(N, row) x (d, row) -> (N, d)`, through oneDNN when allowed.

    oneDNN's linear has no GEMM alpha: the product is scaled in place, then the bias added, as `addmm` does it;
    no scaled copy of the `d x C*F*p*p` kernel is made.
    """
    if (
        fused_path_applies(rows, enabled)
        and _plain_parameter(kernel)
        and _plain_parameter(bias)
        and kernel.dtype == rows.dtype
    ):
        if scale == 1.0:
            return torch.ops.mkldnn._linear_pointwise(rows.contiguous(), kernel, bias, "none", [], "")
        out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), kernel, None, "none", [], "").mul_(scale)
        return out if bias is None else out.add_(bias)
    return torch.addmm(bias, rows, kernel.t(), alpha=scale)


def fusable_siglip_layer(layer: nn.Module) -> bool:
    """A transformers `SiglipEncoderLayer` as built (no subclass, adapter or hook) in eval mode."""
    if type(layer) is not SiglipEncoderLayer or layer.training:
        return False
    attention, mlp = layer.self_attn, layer.mlp
    if type(attention) is not SiglipAttention or type(mlp) is not SiglipMLP:
        return False
    if attention.config._attn_implementation not in (None, "sdpa", "eager"):
        return False
    linears = (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj, mlp.fc1, mlp.fc2)
    norms = (layer.layer_norm1, layer.layer_norm2)
    return (
        all(fusable_linear(module) for module in linears)
        and all(type(norm) is nn.LayerNorm and unhooked(norm) for norm in norms)
        and all(unhooked(module) for module in (layer, attention, mlp))
    )


def fused_siglip_layer(layer: SiglipEncoderLayer, hidden: torch.Tensor) -> torch.Tensor:
    """What `layer(hidden, None)` computes, `(b, n, d) -> (b, n, d)`, with the GEMM epilogues fused.

    Six GEMMs: q, k, v; the output projection with the residual added by the GEMM; fc1 with GELU; fc2 with the
    residual. Attention is torch's SDPA (its CPU flash kernel), unmasked as in the IVE's same-grid batches.
    """
    attention, mlp = layer.self_attn, layer.mlp
    batch, tokens, width = hidden.shape
    heads = (batch, tokens, -1, attention.head_dim)
    normed = layer.layer_norm1(hidden)
    query = fused_linear(attention.q_proj, normed, True).view(heads).transpose(1, 2)
    key = fused_linear(attention.k_proj, normed, True).view(heads).transpose(1, 2)
    value = fused_linear(attention.v_proj, normed, True).view(heads).transpose(1, 2)
    del normed
    attended = F.scaled_dot_product_attention(query, key, value, scale=attention.scale)
    del query, key, value
    attended = attended.transpose(1, 2).reshape(batch, tokens, width)
    hidden = fused_linear(attention.out_proj, attended, True, residual=hidden)
    del attended
    inner = fused_linear(mlp.fc1, layer.layer_norm2(hidden), True, activation=mlp.config.hidden_act)
    return fused_linear(mlp.fc2, inner, True, residual=hidden)
