"""The vision tower: a CLIP-style ViT that turns every frame of a video into tokens.

A video ``(B, T, 3, H, W)`` goes through five steps, the way LLaVA feeds CLIP
features to its language model (plus one step for time):

1. **Preprocess**: uint8 pixels to floats in [0, 1], then CLIP's per-channel
   mean/std normalisation.
2. **ViT on every frame**: the ``T`` frames are folded into the batch
   (``B * T`` images), so frames never see each other inside the tower. Each
   frame is cut into ``p x p`` patches by a strided ``Conv2d`` (the same as a
   linear layer on :func:`mimo_lib.features.patchify` patches), a class token
   is prepended, learned position embeddings are added, a LayerNorm
   (``pre_layrnorm``, spelled as in CLIP) is applied, and pre-norm transformer
   blocks follow.
3. **Feature selection (LLaVA)**: take the hidden states after block
   ``select_layer`` (-2 = penultimate) and drop the class token.
4. **Spatial pooling**: average ``pool_size x pool_size`` neighbouring patches,
   so each frame gives ``(grid / pool_size) ** 2`` tokens.
5. **Temporal embedding**: a learned vector per frame index, added to every
   token of that frame, so the language model can tell frame 0 from frame 7.
   Then an optional LayerNorm.

The output is ``(B, T * tokens_per_frame, D)`` in frame-major order: all tokens
of frame 0, then all of frame 1, and so on.

Hidden-state indexing follows transformers (and so LLaVA): a list of
``num_layers + 1`` tensors, index 0 the embeddings (after ``pre_layrnorm``) and
index ``k`` the output of block ``k``. ``select_layer`` indexes that list, so
-1 is the last block, -2 the penultimate one, and ``k > 0`` block ``k``.

Two backbones share steps 1, 3, 4 and 5: :class:`VisionTower` (``"clip"``,
built in this file, random init) and :class:`HFCLIPVisionTower`
(``"hf-clip"``, a transformers ``CLIPVisionModel`` loaded from a local folder).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mimo_lib.config import VisionTowerConfig
from mimo_lib.towers import hf_checkpoint_folder, import_transformers, sinusoids

#: CLIP's per-channel RGB mean and std (on pixels scaled to [0, 1]), as in OpenAI's CLIP preprocessing.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Frames the ViT encodes at once without gradients (more are split into groups of this many and the
#: results stacked). On a 2-core CPU groups of 64 (eight 8-frame clips) encode a batch of clips in about
#: 45% less time than one pass, whose large activations cost more to allocate and fit no cache:
#: benchmarks/vision_tower_speed.py.
FRAMES_PER_PASS = 64

#: Standard deviation of the normal initialisation of every weight matrix and embedding (as CLIP and GPT-2).
INIT_STD = 0.02


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's activation: ``x * sigmoid(1.702 x)``, a cheap approximation of GELU.

    We use it (not exact GELU) so that our blocks compute the same function as
    OpenAI's CLIP and the weights of a real checkpoint could be copied in.
    """
    return x * torch.sigmoid(1.702 * x)


# --------------------------------------------------------------------------- #
# Step 1: pixels -> normalised floats
# --------------------------------------------------------------------------- #


def preprocess_video(video: torch.Tensor, config: VisionTowerConfig, dtype: torch.dtype) -> torch.Tensor:
    """Check a video batch against ``config`` and normalise it as CLIP does.

    Args:
        video: ``(B, T, C, H, W)``, uint8 in [0, 255] or float in [0, 1].
        config: the tower's config (``num_frames``, ``num_channels``, ``image_size``).
        dtype: floating dtype of the result (the tower's weights).
    Returns:
        ``(B, T, C, H, W)`` in ``dtype``: ``(pixel / 255 - mean) / std`` per channel.
    """
    if video.dim() != 5:
        raise ValueError(
            f"vision tower expects video of shape (B, T, C, H, W), got {tuple(video.shape)}; "
            f"add a batch dimension with video.unsqueeze(0) for a single clip"
        )
    _, num_frames, channels, height, width = video.shape
    if num_frames != config.num_frames:
        raise ValueError(
            f"video has {num_frames} frames but the vision tower was built for num_frames={config.num_frames}; "
            f"sample {config.num_frames} frames per clip or set VisionTowerConfig.num_frames={num_frames} "
            f"(--num-frames)"
        )
    if config.num_channels != len(CLIP_MEAN):
        raise ValueError(f"CLIP normalisation is defined for RGB: set num_channels=3 (got {config.num_channels})")
    if channels != config.num_channels:
        raise ValueError(
            f"video has {channels} channels but the vision tower expects num_channels={config.num_channels} (RGB)"
        )
    if height != config.image_size or width != config.image_size:
        raise ValueError(
            f"video frames are {height}x{width} but the vision tower expects {config.image_size}x{config.image_size}; "
            f"resize the frames or set VisionTowerConfig.image_size"
        )
    if video.dtype == torch.uint8:
        pixels = video.float() / 255.0  # (B, T, C, H, W) in [0, 1]
    elif video.is_floating_point():
        if video.device.type != "meta" and video.numel() > 0:
            low, high = torch.aminmax(video)
            if low < 0 or high > 1:
                raise ValueError(
                    f"float video must be in [0, 1] (got values in [{low.item():.3g}, {high.item():.3g}]); "
                    f"pass uint8 frames for pixels in [0, 255]"
                )
        pixels = video.float()
    else:
        raise TypeError(f"video must be uint8 in [0, 255] or float in [0, 1], got dtype {video.dtype}")
    mean = torch.tensor(CLIP_MEAN, device=video.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=video.device).view(1, 1, 3, 1, 1)
    return ((pixels - mean) / std).to(dtype)  # (B, T, C, H, W)


# --------------------------------------------------------------------------- #
# Step 2: the ViT's building blocks
# --------------------------------------------------------------------------- #


class VisionAttention(nn.Module):
    """Multi-head self-attention over the tokens of one frame (non-causal: every token sees every token)."""

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        # separate q/k/v projections with biases, named as in CLIP
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, s, _ = x.shape
        return x.view(n, s, self.num_heads, self.head_dim).transpose(1, 2)  # (N, heads, S, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape  # (N, S, D), N = frames in the batch, S = 1 + patches
        q, k, v = (self._split_heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (N, heads, S, head_dim)
        y = y.transpose(1, 2).reshape(n, s, d)  # (N, S, D): heads side by side again
        return self.out_proj(y)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights ``softmax(q k^T / sqrt(head_dim))`` that ``forward`` uses, for figures.

        Args:
            x: ``(N, S, D)``, the block's input after ``layer_norm1``.
        Returns:
            ``(N, heads, S, S)``; each row sums to 1.
        """
        q, k = self._split_heads(self.q_proj(x)), self._split_heads(self.k_proj(x))
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)


class VisionMLP(nn.Module):
    """Linear -> quick_gelu -> Linear, widening to ``ffn_hidden_size`` in between."""

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_hidden_size)
        self.fc2 = nn.Linear(config.ffn_hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))  # (N, S, D)


class VisionBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.self_attn = VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = VisionMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))  # (N, S, D)
        return x + self.mlp(self.layer_norm2(x))  # (N, S, D)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, heads, S, S)`` attention weights of this block for its input ``x`` ``(N, S, D)``.

        Feed it ``tower.frame_hidden_states(video)[i]`` to see what block ``i + 1`` attends to.
        """
        return self.self_attn.attention_probs(self.layer_norm1(x))


# --------------------------------------------------------------------------- #
# Steps 3-5: from per-frame hidden states to video tokens
# --------------------------------------------------------------------------- #


class VideoTokenHead(nn.Module):
    """What happens after the ViT: drop the class token, pool, add the temporal embedding, normalise.

    Shared by both backbones. Its input is the selected hidden states of every
    frame, ``(B * T, 1 + N, D)``; its output the video tokens ``(B, T * n, D)``
    with ``n = config.tokens_per_frame``. With ``drop_class_token=False`` the
    (unpooled) class token comes first in each frame's tokens.
    """

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        # one learned vector per frame index, added to all tokens of that frame
        self.temporal_embedding = nn.Parameter(torch.zeros(config.num_frames, d)) if config.temporal_embedding else None
        self.output_norm = nn.LayerNorm(d, eps=config.layernorm_epsilon) if config.normalize_output else None

    def forward(self, hidden: torch.Tensor, batch_size: int) -> torch.Tensor:
        cfg = self.config
        frames, seq, d = hidden.shape  # (B*T, 1+N, D)
        grid = cfg.grid_size
        if frames != batch_size * cfg.num_frames or seq != 1 + grid * grid:
            raise ValueError(
                f"expected hidden states of shape ({batch_size} * {cfg.num_frames}, 1 + {grid}*{grid}, D) "
                f"(B * num_frames, class token + patches, width), got {tuple(hidden.shape)}"
            )
        patches = hidden[:, 1:]  # (B*T, N, D)
        if cfg.pool_size > 1:
            x = patches.transpose(1, 2).reshape(frames, d, grid, grid)  # (B*T, D, grid, grid)
            x = F.avg_pool2d(x, kernel_size=cfg.pool_size)  # (B*T, D, grid/pool, grid/pool)
            patches = x.flatten(2).transpose(1, 2)  # (B*T, n_pooled, D), row-major over the pooled grid
        tokens = patches if cfg.drop_class_token else torch.cat([hidden[:, :1], patches], dim=1)  # (B*T, n, D)
        tokens = tokens.reshape(batch_size, cfg.num_frames, -1, d)  # (B, T, n, D)
        if self.temporal_embedding is not None:
            tokens = tokens + self.temporal_embedding[None, :, None, :]  # (1, T, 1, D) broadcast over tokens
        tokens = tokens.reshape(batch_size, -1, d)  # (B, T*n, D), frame-major
        if self.output_norm is not None:
            tokens = self.output_norm(tokens)
        return tokens


def _hidden_state_index(config: VisionTowerConfig) -> int:
    """``select_layer`` as a non-negative index into the ``num_layers + 1`` hidden states (= blocks to run)."""
    return config.select_layer if config.select_layer >= 0 else config.num_layers + 1 + config.select_layer


# --------------------------------------------------------------------------- #
# The "clip" backbone, built here
# --------------------------------------------------------------------------- #


class VisionTower(nn.Module):
    """A CLIP ViT built from scratch, applied to every frame, followed by :class:`VideoTokenHead`.

    Parameter names follow transformers' ``CLIPVisionModel`` (``self_attn.q_proj``,
    ``layer_norm1``, ``mlp.fc1``, ...) so a CLIP checkpoint maps onto it by renaming.
    """

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size
        d, p = config.hidden_size, config.patch_size
        num_patches = config.grid_size**2
        # a p x p convolution with stride p = one linear layer applied to every flattened patch
        if config.patch_embedding_type == "conv":
            self.patch_embedding = ConvStem(config.num_channels, d, p)
        else:
            self.patch_embedding = nn.Conv2d(config.num_channels, d, kernel_size=p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.position_embedding = nn.Parameter(torch.zeros(1 + num_patches, d))  # class token + grid
        self.pre_layrnorm = nn.LayerNorm(d, eps=config.layernorm_epsilon)
        self.blocks = nn.ModuleList([VisionBlock(config) for _ in range(config.num_layers)])
        self.post_layernorm = nn.LayerNorm(d, eps=config.layernorm_epsilon)  # on the final class token only
        self.token_head = VideoTokenHead(config)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init, CLIP/GPT-2 style.

        Every weight matrix and embedding is ``N(0, 0.02)``; the two projections
        that write into the residual stream (``out_proj``, ``fc2``) are scaled
        down by ``sqrt(2 * num_layers)`` so the stream's variance does not grow
        with depth. Biases are zero, LayerNorms are the identity.
        """
        residual_std = INIT_STD / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if name.startswith("patch_embedding.") and isinstance(module, nn.Conv2d):
                module.reset_parameters()  # conv stem: PyTorch's fan-in init keeps the signal alive through GELUs
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                std = residual_std if name.endswith(("out_proj", "fc2")) else INIT_STD
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.class_embedding, std=INIT_STD)
        # Positions start as sine waves (as in MAE), not as N(0, 0.02) noise: the
        # pre-LayerNorm scales each token to unit size, so tiny random position
        # vectors would be all but erased next to the patch features, and a model
        # that cannot tell where a shape is cannot learn which way it moves.
        with torch.no_grad():
            self.position_embedding.zero_()
            self.position_embedding[1:] = sincos_2d(self.config.grid_size, self.config.hidden_size)
        init_temporal_embedding(self.token_head.temporal_embedding)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` uint8 or [0, 1] float -> ``(B, T, 3, H, W)`` CLIP-normalised floats."""
        return preprocess_video(video, self.config, self.class_embedding.dtype)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames ``(N, 3, H, W)`` -> hidden state 0, ``(N, 1 + patches, D)``."""
        x = self.patch_embedding(frames)  # (N, D, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (N, grid*grid, D), patches row by row
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1) + self.position_embedding  # (N, 1+grid*grid, D)
        return self.pre_layrnorm(x)

    def _frames(self, video: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(video)  # (B, T, 3, H, W)
        return x.flatten(0, 1)  # (B*T, 3, H, W): every frame is an independent image

    def _hidden_states(self, frames: torch.Tensor, num_blocks: int, every: bool = True) -> list[torch.Tensor]:
        """Normalised frames ``(N, 3, H, W)`` -> hidden states 0..``num_blocks`` (``every``) or only the last.

        Each state is ``(N, 1 + patches, D)``. Frames are independent images, so when no gradient is recorded
        (encoding clips: the feature cache, evaluation, generation) they go through in groups of
        :data:`FRAMES_PER_PASS` and each state is the groups' results stacked: the same numbers as one pass.
        Training runs one pass: groups would round the weight gradients' sums differently, and the recipe
        would no longer remake the committed towers bit for bit (``benchmarks/vision_tower_speed.py``).
        """
        group = FRAMES_PER_PASS if not torch.is_grad_enabled() else max(frames.shape[0], 1)
        groups = []
        for start in range(0, frames.shape[0], group):
            x = self.embed(frames[start : start + group])  # (n, 1 + patches, D), n <= group
            states = [x]
            for block in self.blocks[:num_blocks]:
                x = block(x)
                if every:
                    states.append(x)
            groups.append(states if every else [x])
        if len(groups) == 1:
            return groups[0]
        return [torch.cat(parts) for parts in zip(*groups)]  # (N, 1 + patches, D) each

    def frame_hidden_states(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state of every frame: ``num_layers + 1`` tensors, each ``(B*T, 1 + N, D)``.

        Index 0 is the embeddings (after ``pre_layrnorm``), index ``k`` the output of block ``k``.
        """
        return self._hidden_states(self._frames(video), len(self.blocks))

    def selected_hidden_states(self, video: torch.Tensor) -> torch.Tensor:
        """``frame_hidden_states(video)[select_layer]``, ``(B*T, 1 + N, D)``, without running later blocks."""
        return self._hidden_states(self._frames(video), _hidden_state_index(self.config), every=False)[0]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> video tokens ``(B, T * tokens_per_frame, D)``, frame-major."""
        return self.token_head(self.selected_hidden_states(video), batch_size=video.shape[0])

    def class_embedding_per_frame(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)``: each frame's final-layer class token after ``post_layernorm`` (CLIP's image embedding)."""
        x = self._hidden_states(self._frames(video), len(self.blocks), every=False)[0]  # (B*T, 1 + N, D)
        return self.post_layernorm(x[:, 0]).view(video.shape[0], self.config.num_frames, -1)  # (B, T, D)


# --------------------------------------------------------------------------- #
# The "hf-clip" backbone: a transformers CLIPVisionModel from a local folder
# --------------------------------------------------------------------------- #

#: VisionTowerConfig field -> CLIPVisionConfig attribute that must agree with it.
_HF_CONFIG_FIELDS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_channels": "num_channels",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "ffn_hidden_size": "intermediate_size",
}


class HFCLIPVisionTower(nn.Module):
    """transformers' ``CLIPVisionModel`` (pretrained, from a local folder) + a new :class:`VideoTokenHead`.

    Same contract as :class:`VisionTower`. The checkpoint's shape must match
    ``config``; the error lists the values to set. The temporal embedding and
    output LayerNorm are new and start from random init.
    """

    def __init__(self, config: VisionTowerConfig):
        super().__init__()
        folder = hf_checkpoint_folder(config.pretrained_path, config.backbone_type, "openai/clip-vit-large-patch14-336")
        transformers = import_transformers(config.backbone_type)
        hf_config = transformers.CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
        mismatched = {
            ours: getattr(hf_config, theirs)
            for ours, theirs in _HF_CONFIG_FIELDS.items()
            if getattr(config, ours) != getattr(hf_config, theirs)
        }
        if mismatched:
            given = ", ".join(f"{k}={getattr(config, k)}" for k in mismatched)
            wanted = ", ".join(f"{k}={v}" for k, v in mismatched.items())
            raise ValueError(
                f"VisionTowerConfig does not match the checkpoint in {str(folder)!r}: the config has {given} but "
                f"the checkpoint has {wanted}; set VisionTowerConfig({wanted}, ...)"
            )
        self.config = config
        self.output_size = config.hidden_size
        model = transformers.CLIPVisionModel.from_pretrained(folder, config=hf_config, local_files_only=True)
        # newer transformers keep the checkpoint's dtype (often float16); start in float32 like the "clip"
        # backbone and the new head below, and let the caller choose with tower.to(dtype)
        self.model = model.float()
        self.token_head = VideoTokenHead(config)
        init_temporal_embedding(self.token_head.temporal_embedding)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` uint8 or [0, 1] float -> ``(B, T, 3, H, W)`` CLIP-normalised floats."""
        return preprocess_video(video, self.config, self.model.embeddings.patch_embedding.weight.dtype)

    def _run(self, video: torch.Tensor):
        frames = self.preprocess(video).flatten(0, 1)  # (B*T, 3, H, W)
        return self.model(pixel_values=frames, output_hidden_states=True)

    def frame_hidden_states(self, video: torch.Tensor) -> list[torch.Tensor]:
        """transformers' ``hidden_states``: ``num_layers + 1`` tensors, each ``(B*T, 1 + N, D)``."""
        return list(self._run(video).hidden_states)

    def selected_hidden_states(self, video: torch.Tensor) -> torch.Tensor:
        """``hidden_states[select_layer]`` (LLaVA's choice), ``(B*T, 1 + N, D)``."""
        return self._run(video).hidden_states[self.config.select_layer]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> video tokens ``(B, T * tokens_per_frame, D)``, frame-major."""
        return self.token_head(self.selected_hidden_states(video), batch_size=video.shape[0])

    def class_embedding_per_frame(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)``: CLIP's ``pooler_output`` (final class token after ``post_layernorm``) per frame."""
        pooled = self._run(video).pooler_output  # (B*T, D)
        return pooled.view(video.shape[0], self.config.num_frames, -1)


# --------------------------------------------------------------------------- #
# Building and counting
# --------------------------------------------------------------------------- #


def build_vision_tower(config: VisionTowerConfig) -> nn.Module:
    """``"clip"`` -> a randomly initialised :class:`VisionTower`; ``"hf-clip"`` -> :class:`HFCLIPVisionTower`."""
    if config.backbone_type == "clip":
        if config.pretrained_path is not None:
            raise ValueError(
                f'backbone_type="clip" builds a randomly initialised tower, but pretrained_path='
                f"{config.pretrained_path!r} was given; load saved weights with load_state_dict after building, "
                f'or use backbone_type="hf-clip" for a transformers checkpoint folder'
            )
        return VisionTower(config)
    if config.backbone_type == "hf-clip":
        return HFCLIPVisionTower(config)
    raise ValueError(f"unknown vision backbone_type {config.backbone_type!r}; choose 'clip' or 'hf-clip'")


def sincos_1d(num_positions: int, dim: int) -> torch.Tensor:
    """``(num_positions, dim)`` sine/cosine waves of geometrically spaced frequencies (Transformer style).

    The rates ``10000 ** (-i / (dim/2))`` of the Transformer and MAE: :func:`mimo_lib.towers.sinusoids`.
    """
    return sinusoids(num_positions, dim, whisper_spacing=False)


def sincos_2d(grid_size: int, dim: int) -> torch.Tensor:
    """``(grid_size**2, dim)`` 2-D sine/cosine positions, row by row: half the channels code y, half x."""
    half = dim // 2
    y = sincos_1d(grid_size, half)  # (G, dim/2)
    x = sincos_1d(grid_size, dim - half)  # (G, dim/2)
    rows = y[:, None, :].expand(grid_size, grid_size, half)  # (G, G, dim/2): same for every column
    cols = x[None, :, :].expand(grid_size, grid_size, dim - half)  # (G, G, dim/2): same for every row
    return torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, dim)


def init_temporal_embedding(embedding: nn.Parameter | None) -> None:
    """Frame ``t`` starts as the sine/cosine code of ``t``, so frames are told apart from the first step."""
    if embedding is not None:
        with torch.no_grad():
            embedding.copy_(sincos_1d(*embedding.shape))


class ConvStem(nn.Sequential):
    """A convolutional patch embedding, as in hybrid ViTs ("early convolutions help transformers see").

    ``log2(patch_size)`` 3x3 convolutions of stride 2, GELU between them, widths
    doubling up to ``hidden_size``: ``(N, 3, H, W) -> (N, D, H/p, W/p)``, the same
    grid as CLIP's single ``p x p`` convolution, but built from small local
    filters that learn edges and corners quickly.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int) -> None:
        num_layers = int(math.log2(patch_size))
        widths = [in_channels] + [max(hidden_size // 2 ** (num_layers - 1 - i), 1) for i in range(num_layers)]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        super().__init__(*layers)


def conv_stem_num_parameters(in_channels: int, hidden_size: int, patch_size: int) -> int:
    """Closed form for :class:`ConvStem`: 3x3 kernels plus a bias per output channel."""
    num_layers = int(math.log2(patch_size))
    widths = [in_channels] + [max(hidden_size // 2 ** (num_layers - 1 - i), 1) for i in range(num_layers)]
    return sum(a * b * 9 + b for a, b in zip(widths[:-1], widths[1:]))


def vision_tower_num_parameters(config: VisionTowerConfig) -> int:
    """Parameters of the tower, in closed form (no allocation).

    Exact for ``"clip"``; also for ``"hf-clip"``, whose ``CLIPVisionModel`` has
    the same layout (and whose shape must match ``config``).
    """
    d, f, c, p = config.hidden_size, config.ffn_hidden_size, config.num_channels, config.patch_size
    patches = conv_stem_num_parameters(c, d, p) if config.patch_embedding_type == "conv" else c * p * p * d
    embeddings = patches + d + (config.grid_size**2 + 1) * d  # patch embedding, class token, positions
    attention = 4 * (d * d + d)  # q, k, v, out projections with biases
    mlp = d * f + f + f * d + d  # fc1, fc2 with biases
    block = attention + mlp + 2 * (2 * d)  # + two LayerNorms (weight and bias)
    layernorms = 2 * (2 * d)  # pre_layrnorm, post_layernorm
    head = config.num_frames * d * config.temporal_embedding + 2 * d * config.normalize_output
    return embeddings + config.num_layers * block + layernorms + head
