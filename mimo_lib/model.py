"""The whole MIMO model: towers, projectors, the zipper and the GPT decoder.

    video (B, T, 3, H, W) --vision tower--> (B, Nv, Dv) --vision projector--> (B, Nv', D) --+
    audio (B, N)          --audio tower---> (B, Na, Da) --audio projector---> (B, Na', D) --+--> combine --> GPT --> logits
    input_ids (B, L) with <video>/<audio> placeholders --word embeddings--> (B, L, D) ------+

``combine_multimodal_inputs`` puts each modality's tokens where its
placeholder stands, so the decoder reads one sequence of text, video and
audio positions. Labels cover the assistant's answers only.

Time (chapter 8): ``config.av_layout`` ("block" or "interleaved") and
``config.av_positions`` ("sequence" or "time") choose how the zipper lays out
a clip and numbers its positions; :meth:`MIMOModel.token_timing` says when each
video and audio token happens (frame ``i`` of ``T`` shows
``[i, i + 1) * clip / T``; audio token ``j`` of ``N`` covers ``[j, j + 1) * clip / N``,
``clip`` = ``audio.clip_duration_s``, the window both senses see). With ``config.av_time_embedding``
each projected video and audio token also gets the learned vector of its time chunk
(:mod:`mimo_lib.time_embedding`) before the zipper.

Freezing helpers (:meth:`MIMOModel.set_trainable`) serve the two training
stages of chapter 7: ``align`` trains only the projectors, ``instruct``
trains the projectors and the language model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mimo_lib.audio_tower import build_audio_tower
from mimo_lib.combine import CombinedInputs, TokenTiming, combine_multimodal_inputs, sample_name
from mimo_lib.config import MIMOConfig
from mimo_lib.errors import CombineError
from mimo_lib.language_backends import build_language_model
from mimo_lib.language_model import generate
from mimo_lib.projector import ModalityProjector, merged_token_frames
from mimo_lib.time_embedding import TimeEmbedding
from mimo_lib.towers import load_tower_weights
from mimo_lib.vision_tower import build_vision_tower

#: The parts of the model, by the names ``set_trainable`` and checkpoints use.
COMPONENTS = ("vision_tower", "audio_tower", "vision_projector", "audio_projector", "language_model")


@dataclass
class Modality:
    """One sense the model reads, keyed by its name as megatron-core's ``modality_submodules`` are."""

    name: str  # "video" or "audio": the keyword of its media and features, and its placeholder's text <name>
    token_id: int  # its placeholder id in input_ids; each occurrence becomes this modality's tokens
    encoder: nn.Module  # the tower: media -> (B, N, D_tower)
    projector: nn.Module  # (B, N, D_tower) -> (B, N', D): into the decoder's width


def check_media_or_features(media: dict, features: dict) -> None:
    """A modality's raw media or its precomputed tower outputs, not both (a caller's mistake: ``ValueError``)."""
    for name in media:
        if media[name] is not None and features[name] is not None:
            raise ValueError(f"give {name} or {name}_features, not both")


def samples_with_placeholder(
    input_ids: torch.Tensor, modality: Modality, given: bool, sample_ids: Sequence[str] | None
) -> torch.Tensor:
    """``(num_items,)`` rows whose text holds the modality's placeholder: at most one each, and media to fill it."""
    counts = (input_ids == modality.token_id).sum(dim=1)  # (B,)
    if counts.numel() == 0 or counts.max() == 0:
        return torch.nonzero(counts, as_tuple=True)[0]  # no sample uses this modality
    name = modality.name
    if counts.max() > 1:
        row = int(torch.argmax(counts))
        raise CombineError(
            f"{sample_name(sample_ids, row)}: {int(counts[row])} <{name}> placeholders, "
            f"but one {name} per sample is supported"
        )
    if not given:
        row = int(torch.nonzero(counts)[0])
        raise CombineError(f"{sample_name(sample_ids, row)}: has a <{name}> placeholder but no {name} was given")
    return torch.nonzero(counts, as_tuple=True)[0]  # (num_items,)


@dataclass
class MIMOOutput:
    logits: torch.Tensor  # (B, S, padded_vocab_size) over the combined sequence
    loss: torch.Tensor | None  # mean next-token cross-entropy over answer tokens
    combined: CombinedInputs  # the decoder input and its masks, for inspection and figures


class MIMOModel(nn.Module):
    """Audio-video-language model: ``forward(video, audio, input_ids, labels)`` → logits and loss."""

    def __init__(self, config: MIMOConfig, backend: str = "local") -> None:
        """``backend``: the language model's, ``"local"`` or ``"megatron"`` (see :mod:`mimo_lib.language_backends`)."""
        super().__init__()
        self.config = config
        self.vision_tower = build_vision_tower(config.vision)
        self.audio_tower = build_audio_tower(config.audio)
        width = config.language_model.hidden_size
        self.vision_projector = ModalityProjector(
            self.vision_tower.output_size, width, config.projector.vision_token_compression, config.projector.projector_type,
            temporal_compression=config.projector.vision_temporal_compression,
            tokens_per_frame=config.vision.tokens_per_frame,
        )
        self.audio_projector = ModalityProjector(
            self.audio_tower.output_size, width, config.projector.audio_token_compression, config.projector.projector_type
        )
        self.language_model = build_language_model(config.language_model, backend)
        # Last, and zeros without a random draw: every other weight is initialised as without it.
        self.time_embedding = TimeEmbedding(config.num_time_chunks, width) if config.av_time_embedding else None

    # ------------------------------------------------------------------ modalities and encoders

    @property
    def modalities(self) -> dict[str, Modality]:
        """The senses by name. Built from the attributes on each call, so the parts keep their
        state-dict names (``vision_tower.*``, ...) and a wrapped attribute is seen as wrapped."""
        c = self.config
        return {
            "video": Modality("video", c.video_token_id, self.vision_tower, self.vision_projector),
            "audio": Modality("audio", c.audio_token_id, self.audio_tower, self.audio_projector),
        }

    def token_timing(self) -> TokenTiming:
        """When each video and audio token of a clip begins (seconds into the clip window), for the zipper.

        Video: the first frame each projected token merges (:func:`~mimo_lib.projector.merged_token_frames`)
        times ``clip / T``. Audio: token ``j`` of the ``N`` the projector emits begins at ``j * clip / N``.
        """
        c = self.config
        clip = c.audio.clip_duration_s
        frames = merged_token_frames(
            c.vision.num_frames, c.vision.tokens_per_frame, c.projector.vision_temporal_compression,
            c.projector.vision_token_compression,
        )  # (Nv,)
        video = frames.double() * clip / c.vision.num_frames  # (Nv,) seconds
        audio = torch.arange(c.num_audio_tokens, dtype=torch.float64) * clip / c.num_audio_tokens  # (Na,) seconds
        return TokenTiming({c.video_token_id: video, c.audio_token_id: audio}, c.chunk_seconds, c.ticks_per_second)

    def add_time_embedding(self, token_id: int, tokens: torch.Tensor, timing: TokenTiming | None = None) -> torch.Tensor:
        """``tokens`` (items, N, D) of the modality with placeholder ``token_id``, plus its chunks' time vectors
        (unchanged without ``config.av_time_embedding``); ``timing``: :meth:`token_timing`, if already made."""
        if self.time_embedding is None:
            return tokens
        timing = timing if timing is not None else self.token_timing()
        return self.time_embedding(tokens, timing.chunks(token_id))  # (items, N, D)

    def encode(self, name: str, media: torch.Tensor) -> torch.Tensor:
        """Media of modality ``name`` → ``(B, tokens, D)``: its tower, then its projector."""
        modality = self.modalities[name]
        return modality.projector(modality.encoder(media))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) → (B, num_video_tokens, D): tower, then projector."""
        return self.encode("video", video)

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) → (B, num_audio_tokens, D): tower, then projector."""
        return self.encode("audio", audio)

    def combine(
        self,
        input_ids: torch.Tensor,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
        sample_ids=None,
        video_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
    ) -> CombinedInputs:
        """Token ids + media → the decoder's input sequence (see ``combine_multimodal_inputs``).

        ``video_features`` (B, Nv, Dv) / ``audio_features`` (B, Na, Da): tower outputs computed
        beforehand, used instead of running a tower on ``video`` / ``audio`` (a frozen tower gives
        the same features every epoch, so training can compute them once per clip).
        """
        c = self.config
        media = {"video": video, "audio": audio}  # (B, T, 3, H, W), (B, N) or None
        features = {"video": video_features, "audio": audio_features}  # (B, N, D_tower) or None
        check_media_or_features(media, features)
        if attention_mask is None:
            attention_mask = input_ids != c.pad_token_id  # (B, L): without a mask, <pad> ids are padding
        input_ids = input_ids.masked_fill(~attention_mask, c.pad_token_id)  # placeholders are only counted on real tokens

        # Each sample holding a modality's placeholder contributes its own clip: items come out in batch
        # order, the order combine_multimodal_inputs consumes them in.
        items = {}  # placeholder id -> (num_items, tokens, D)
        timing = self.token_timing()  # when each token is: for the time embedding and the zipper
        for name, modality in self.modalities.items():
            given = media[name] is not None or features[name] is not None
            rows = samples_with_placeholder(input_ids, modality, given, sample_ids)  # (num_items,)
            if len(rows) == 0:
                continue
            if features[name] is not None:  # the tower already ran: only project
                projected = modality.projector(features[name][rows])  # (num_items, tokens, D)
            else:
                projected = modality.projector(modality.encoder(media[name][rows]))  # (num_items, tokens, D)
            items[modality.token_id] = self.add_time_embedding(modality.token_id, projected, timing)
        return combine_multimodal_inputs(
            input_ids,
            self.language_model.embed_tokens(input_ids),
            items,
            attention_mask=attention_mask,
            labels=labels,
            pad_token_id=c.pad_token_id,
            ignore_index=c.ignore_index,
            max_length=c.language_model.max_sequence_length,
            padding_side=padding_side,
            sample_ids=sample_ids,
            modality_names={modality.token_id: name for name, modality in self.modalities.items()},
            layout=c.av_layout,
            positions=c.av_positions,
            timing=timing,
        )

    # ------------------------------------------------------------------ forward and generate

    def forward(
        self,
        input_ids: torch.Tensor,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sample_ids=None,
        video_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
    ) -> MIMOOutput:
        """Logits over the combined sequence, and the loss on answer tokens when ``labels`` are given.

        Args:
            input_ids: (B, L) token ids with ``<video>``/``<audio>`` placeholders, right-padded.
            video: (B, T, 3, H, W) uint8 frames, or None.
            audio: (B, N) float waveform at 16 kHz, or None.
            labels: (B, L) with ``ignore_index`` where no loss is wanted.
            attention_mask: (B, L) bool, True on real tokens.
            video_features, audio_features: tower outputs instead of ``video`` / ``audio`` (see :meth:`combine`).
        """
        combined = self.combine(
            input_ids, video, audio, attention_mask, labels, sample_ids=sample_ids,
            video_features=video_features, audio_features=audio_features,
        )
        out = self.language_model(
            decoder_input=combined.embeddings,
            position_ids=combined.position_ids,
            attention_mask=combined.attention_mask,
            labels=combined.labels,
            ignore_index=self.config.ignore_index,
        )
        return MIMOOutput(out.logits, out.loss, combined)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 24,
        eos_token_id: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Answer prompts (from ``build_prompt``); returns new token ids (B, max_new_tokens), eos-padded after each answer.

        ``eos_token_id`` defaults to the config's (the tokenizer's ``<eos>``). A model with ``config.audio_output``
        decodes under :func:`mimo_lib.audio_output.generate_with_audio`'s constraints (text outside
        ``<audio_out>`` spans, exactly ``codes_per_span`` audio codes inside).
        """
        combined = self.combine(input_ids, video, audio, attention_mask, padding_side="left")
        if self.config.audio_output is not None:  # a model that can answer with sound: constrained decoding (chapter 10)
            from mimo_lib.audio_output import generate_with_audio

            return generate_with_audio(
                self.language_model, combined.embeddings, combined.attention_mask, combined.position_ids,
                self.config.audio_output, max_new_tokens=max_new_tokens,
                eos_token_id=self.config.eos_token_id if eos_token_id is None else eos_token_id, do_sample=do_sample,
                temperature=temperature, top_k=top_k, generator=generator, use_cache=use_cache,
            )
        return generate(
            self.language_model,
            combined.embeddings,
            combined.attention_mask,
            combined.position_ids,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.config.eos_token_id if eos_token_id is None else eos_token_id,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            use_cache=use_cache,
        )

    # ------------------------------------------------------------------ freezing

    def set_trainable(self, **trainable: bool) -> None:
        """Freeze or unfreeze components by name, e.g. ``set_trainable(vision_tower=False, language_model=True)``.

        Names: ``vision_tower``, ``audio_tower``, ``vision_projector``, ``audio_projector``,
        ``language_model``, and the shorthands ``towers`` and ``projectors``. The time embedding, where the
        config has one, learns with the language model: it is the decoder's notion of when a token is.
        """
        groups = {
            "towers": ("vision_tower", "audio_tower"),
            "projectors": ("vision_projector", "audio_projector"),
        }
        for name, flag in trainable.items():
            for component in groups.get(name, (name,)):
                if component not in COMPONENTS:
                    raise ValueError(f"unknown component {name!r}; choose from {COMPONENTS + tuple(groups)}")
                getattr(self, component).requires_grad_(flag)
                if component == "language_model" and self.time_embedding is not None:
                    self.time_embedding.requires_grad_(flag)

    def trainable_summary(self) -> dict[str, tuple[int, int]]:
        """``{component: (trainable parameters, all parameters)}``."""
        summary = {}
        for name in COMPONENTS + (("time_embedding",) if self.time_embedding is not None else ()):
            params = list(getattr(self, name).parameters())
            summary[name] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
        return summary

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def load_towers(self, vision_path: str | Path | None = None, audio_path: str | Path | None = None) -> None:
        """Load pretrained tower weights: a file written by ``mimo_lib.pretrain_towers`` (or
        ``python -m mimo_lib.checkpoint export-towers``), or a trained model's folder (model, run or step
        folder), whose towers are taken; either way the tower config must match this model's."""
        for modality, path in (("vision", vision_path), ("audio", audio_path)):
            if path is None:
                continue
            tower = getattr(self, f"{modality}_tower")
            if Path(path).is_dir():
                from mimo_lib.checkpoint import read_tower_weights
                from mimo_lib.towers import TowerCheckpointError, tower_config_differences

                saved, state = read_tower_weights(path, modality)
                differences = tower_config_differences(saved, tower.config)
                if differences:
                    raise TowerCheckpointError(
                        f"{path}: its {modality} tower differs from this model's ({'; '.join(differences)})")
                tower.load_state_dict(state)
            else:
                load_tower_weights(tower, path, f"{modality}_tower")
