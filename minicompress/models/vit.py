"""VisionTransformer with torchvision's constructor arguments, module tree and state-dict keys
(``conv_proj``, ``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_i.{ln_1,
self_attention, ln_2, mlp.0, mlp.3}``, ``encoder.ln``, ``heads.head``).

    tokens = permute(flatten(conv_proj(x)))          (N, S, D): one token per patch
    z = cat(class_token, tokens) + pos_embedding     (N, S + 1, D)
    per block:  z = z + dropout(attention(ln_1(z)));  z = z + mlp(ln_2(z))
    y = heads(ln(z)[:, 0])                           the class token's final state

The operations torchvision does on raw tensors are leaf modules here, with no keys: ``flatten`` and
``permute`` after the patch projection, ``prepend`` (the class token put before the patch tokens),
``Add`` modules for the position embedding and the residuals, ``select`` (token 0). The class token
and the position embedding are parameters passed into them (``trace_graph`` sees parameters as
sources), and the owning module accumulates their gradients.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .. import nn
from ..nn import init
from ..nn.layers._utils import check_array, check_grad
from ..nn.random import get_rng

__all__ = ["PrependToken", "SelectToken", "MLPBlock", "EncoderBlock", "Encoder", "VisionTransformer"]


class PrependToken(nn.Module):
    """y = cat(token broadcast to the batch, x) along dim 1:  token (1, 1, D), x (N, S, D) -> (N, S + 1, D)."""

    declared_kind = "features"      # y[..., c] reads token[..., c] and x[..., c] only (nn.kinds)

    def forward(self, token: np.ndarray, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if token.shape != (1, 1, x.shape[-1]) or x.ndim != 3:
            raise ValueError(f"{self._name()}: expected token (1, 1, D) and x (N, S, D), got {token.shape} and {x.shape}")
        y = np.concatenate([np.broadcast_to(token, (x.shape[0], 1, x.shape[2])), x], axis=1)
        self._save_for_backward(y.shape)
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d token = sum over the batch of d y[:, :1], d x = d y[:, 1:])."""
        check_grad(self, grad_output, self._saved())
        return grad_output[:, :1].sum(axis=0, keepdims=True), grad_output[:, 1:]


class SelectToken(nn.Module):
    """y = x[:, index]:  (N, S, D) -> (N, D); backward puts the gradient back at that token."""

    declared_kind = "features"

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if x.ndim != 3:
            raise ValueError(f"{self._name()}: expected (N, S, D), got {x.shape}")
        self._save_for_backward(x.shape)
        return x[:, self.index]

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape = self._saved()
        dx = np.zeros(shape, grad_output.dtype)
        dx[:, self.index] = grad_output
        return dx

    def extra_repr(self) -> str:
        return f"index={self.index}"


class MLPBlock(nn.Sequential):
    """Linear(D, mlp_dim) -> GELU -> Dropout -> Linear(mlp_dim, D) -> Dropout (keys 0 and 3), torchvision's
    init: xavier_uniform_ weights, N(0, 1e-6) biases."""

    def __init__(self, in_dim: int, mlp_dim: int, dropout: float, *, rng: Any = None) -> None:
        rng = get_rng(rng)
        super().__init__(nn.Linear(in_dim, mlp_dim, rng=rng), nn.GELU(), nn.Dropout(dropout, rng=rng),
                         nn.Linear(mlp_dim, in_dim, rng=rng), nn.Dropout(dropout, rng=rng))
        self.in_dim, self.mlp_dim, self.dropout = in_dim, mlp_dim, dropout
        for m in (self[0], self[3]):
            init.xavier_uniform_(m.weight, rng=rng)
            init.normal_(m.bias, std=1e-6, rng=rng)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block:  z = z + dropout(attn(ln_1(z)));  z = z + mlp(ln_2(z)).

    backward: the two residuals in reverse; self-attention's query, key and value gradients are summed
    (all three are ln_1(z)).
    """

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float, attention_dropout: float,
                 norm_layer: Callable[..., nn.Module] | None = None, *, rng: Any = None) -> None:
        super().__init__()
        norm_layer = norm_layer or (lambda d: nn.LayerNorm(d, eps=1e-6))
        self.num_heads = num_heads
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout,
                                                    batch_first=True, rng=rng)
        self.dropout = nn.Dropout(dropout, rng=rng)
        self.add_attention = nn.Add()
        self.ln_2 = norm_layer(hidden_dim)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout, rng=rng)
        self.add_mlp = nn.Add()
        self._args = dict(num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout,
                          attention_dropout=attention_dropout)

    def _config(self) -> dict:
        """Constructor arguments for model files (``dropout`` is also the name of a child here)."""
        return dict(self._args)

    def forward(self, z: np.ndarray) -> np.ndarray:
        h = self.ln_1(z)
        attended, _ = self.self_attention(h, h, h, need_weights=False)
        x = self.add_attention(self.dropout(attended), z)
        return self.add_mlp(x, self.mlp(self.ln_2(x)))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d_x, d_mlp = self.add_mlp.backward(grad_output)
        d_x = d_x + self.ln_2.backward(self.mlp.backward(d_mlp))
        d_attended, d_z = self.add_attention.backward(d_x)
        dq, dk, dv = self.self_attention.backward(self.dropout.backward(d_attended))
        return d_z + self.ln_1.backward(dq + dk + dv)


class Encoder(nn.Module):
    """z = ln(layers(dropout(z + pos_embedding))), ``pos_embedding`` (1, S, D) ~ N(0, 0.02^2)."""

    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
                 dropout: float, attention_dropout: float, norm_layer: Callable[..., nn.Module] | None = None,
                 *, rng: Any = None) -> None:
        super().__init__()
        rng = get_rng(rng)
        norm_layer = norm_layer or (lambda d: nn.LayerNorm(d, eps=1e-6))
        self.pos_embedding = nn.Parameter(rng.normal(0.0, 0.02, (1, seq_length, hidden_dim)).astype(np.float32))
        self.add_position = nn.Add()
        self.dropout = nn.Dropout(dropout, rng=rng)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
                                                norm_layer, rng=rng)) for i in range(num_layers)))
        self.ln = norm_layer(hidden_dim)
        self._args = dict(seq_length=seq_length, num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
                          mlp_dim=mlp_dim, dropout=dropout, attention_dropout=attention_dropout)

    def _config(self) -> dict:
        """Constructor arguments for model files (``dropout`` is also the name of a child here)."""
        return dict(self._args)

    def forward(self, z: np.ndarray) -> np.ndarray:
        if z.ndim != 3 or z.shape[1:] != self.pos_embedding.shape[1:]:
            raise ValueError(f"Encoder: expected (N, {self.pos_embedding.shape[1]}, {self.pos_embedding.shape[2]}), "
                             f"got {z.shape}")
        return self.ln(self.layers(self.dropout(self.add_position(z, self.array("pos_embedding")))))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d = self.dropout.backward(self.layers.backward(self.ln.backward(grad_output)))
        d_z, d_position = self.add_position.backward(d)
        self.accumulate_grad("pos_embedding", d_position)
        return d_z


class VisionTransformer(nn.Module):
    """torchvision's ViT (module docstring), plus ``in_channels``. ``representation_size`` adds
    torchvision's ``pre_logits`` Linear + Tanh before ``head``. Initialisation as torchvision's:
    conv_proj ~ trunc_normal(std sqrt(1 / fan_in)), zero class token and head."""

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0, num_classes: int = 1000,
                 representation_size: int | None = None, norm_layer: Callable[..., nn.Module] | None = None,
                 *, in_channels: int = 3, rng: Any = None) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"VisionTransformer: input shape indivisible by patch size "
                             f"(image_size={image_size}, patch_size={patch_size})")
        rng = get_rng(rng)
        self.image_size, self.patch_size, self.hidden_dim, self.mlp_dim = image_size, patch_size, hidden_dim, mlp_dim
        self.num_layers, self.num_heads, self.num_classes = num_layers, num_heads, num_classes
        self.dropout, self.attention_dropout, self.representation_size = dropout, attention_dropout, representation_size
        self.in_channels = in_channels
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size, rng=rng)
        self.flatten = nn.Flatten(2)
        self.permute = nn.Permute([0, 2, 1])
        self.class_token = nn.Parameter(np.zeros((1, 1, hidden_dim), np.float32))
        self.prepend = PrependToken()
        self.seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(self.seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
                               norm_layer, rng=rng)
        self.select = SelectToken(0)
        heads: OrderedDict[str, nn.Module] = OrderedDict()
        if representation_size is None:
            heads["head"] = nn.Linear(hidden_dim, num_classes, rng=rng)
        else:
            heads["pre_logits"] = nn.Linear(hidden_dim, representation_size, rng=rng)
            heads["act"] = nn.Tanh()
            heads["head"] = nn.Linear(representation_size, num_classes, rng=rng)
        self.heads = nn.Sequential(heads)
        fan_in = in_channels * patch_size * patch_size
        init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in), rng=rng)
        self.conv_proj.bias.data[...] = 0
        if representation_size is not None:
            init.trunc_normal_(self.heads.pre_logits.weight, std=math.sqrt(1 / hidden_dim), rng=rng)
            self.heads.pre_logits.bias.data[...] = 0
        self.heads.head.weight.data[...] = 0
        self.heads.head.bias.data[...] = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"VisionTransformer: expected input (N, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {getattr(x, 'shape', type(x).__name__)}")
        tokens = self.permute(self.flatten(self.conv_proj(x)))                   # (N, S, D)
        z = self.encoder(self.prepend(self.array("class_token"), tokens))        # (N, S + 1, D)
        return self.heads(self.select(z))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self.conv_proj.backward(self._backward_to_patches(grad_output))

    def backward_params(self, grad_output: np.ndarray) -> None:
        """The input was data: ``conv_proj`` computes no d input."""
        self.conv_proj.backward_params(self._backward_to_patches(grad_output))

    def _backward_to_patches(self, grad_output: np.ndarray) -> np.ndarray:
        """d loss / d conv_proj's output (N, D, H/p, W/p); accumulates the class token's gradient."""
        d_z = self.encoder.backward(self.select.backward(self.heads.backward(grad_output)))
        d_token, d_tokens = self.prepend.backward(d_z)
        self.accumulate_grad("class_token", d_token)
        return self.flatten.backward(self.permute.backward(d_tokens))
