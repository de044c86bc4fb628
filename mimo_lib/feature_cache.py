"""Frozen towers give the same features every epoch: compute them once per clip.

Both training stages of chapter 7 freeze the towers, and the vision tower is
about half the cost of a toy training step (8 frames x 65 patch tokens per
clip, against the decoder's ~180 positions). :class:`TowerFeatureCache`
renders each training sample once, runs the frozen towers on it once, and
keeps the tower outputs (and the tokenized conversation) in memory; every
later epoch reads them back and only the projectors and the decoder run::

    cache = TowerFeatureCache(model, train_set, pad_id=tokenizer.pad_id)
    cache.fill()                     # optional: encode every clip now, with a progress bar
    batch = cache.batch([5, 17, 3])  # a Batch: text + video_features (B, Nv, Dv) + audio_features (B, Na, Da)
    model(batch.input_ids, labels=batch.labels, attention_mask=batch.attention_mask,
          video_features=batch.video_features, audio_features=batch.audio_features)

The clips are the dataset's samples, read as everywhere else: frames and audio of a
file from the same time window (:func:`mimo_lib.data.media.read_clip`), so cached
features see and hear the same seconds as the towers would at every step.

Samples are encoded in fixed chunks (indices ``[k * chunk_size, (k + 1) *
chunk_size)``) the first time any of them is drawn, so the arithmetic does not
depend on which batch asked first: a resumed run recomputes bitwise the same
features. Memory: ``num_samples x (Nv x Dv + Na x Da) x 4`` bytes, 320 MB for
4096 toy clips; ``python -m mimo_lib.train --no-cache-tower-features`` runs the
towers every step instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import Dataset

from mimo_lib.data.dataset import Batch, collate_av_batch

RENDER_GROUP = 8  # chunks rendered together by the worker processes: 512 toy clips, about 80 MB of media
TEXT_KEYS = ("id", "question_type", "conversations", "input_ids", "labels")  # what a sample keeps besides media


class TowerFeatureCache:
    """Tower outputs and tokenized text of every sample of ``dataset``, computed on first use."""

    def __init__(
        self, model: nn.Module, dataset: Dataset, pad_id: int, chunk_size: int = 64, device: str | torch.device = "cpu"
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 (got {chunk_size})")
        self.model = model
        self.dataset = dataset
        self.pad_id = pad_id
        self.chunk_size = chunk_size
        self.device = torch.device(device)
        n = len(dataset)
        self.text: list[dict | None] = [None] * n
        self.features: dict[str, torch.Tensor | None] = {"video": None, "audio": None}  # (N, tokens, D), made lazily
        self.has: dict[str, torch.Tensor] = {"video": torch.zeros(n, dtype=torch.bool), "audio": torch.zeros(n, dtype=torch.bool)}
        self.done = torch.zeros((n + chunk_size - 1) // chunk_size, dtype=torch.bool)  # chunks encoded so far

    def __len__(self) -> int:
        return len(self.text)

    def _indices(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, len(self)))

    @torch.no_grad()
    def _encode_chunk(self, chunk: int, samples: list[dict] | None = None) -> None:
        """Run the towers on one chunk's samples (rendered here unless given)."""
        indices = self._indices(chunk)
        if samples is None:
            samples = [self.dataset[i] for i in indices]
        media = collate_av_batch(samples, self.pad_id)
        towers = {  # modality -> (its tower, the batch's (B, ...) media, which samples have it)
            "video": (self.model.vision_tower, media.video, media.has_video),
            "audio": (self.model.audio_tower, media.audio, media.has_audio),
        }
        for modality, (tower, clips, has) in towers.items():
            rows = torch.nonzero(has, as_tuple=True)[0]  # samples that have this modality
            if len(rows) == 0:
                continue
            out = tower(clips[rows].to(self.device)).float().cpu()  # (rows, tokens, D)
            if self.features[modality] is None:
                self.features[modality] = torch.zeros(len(self), *out.shape[1:])
            index = torch.tensor(list(indices))[rows]
            self.features[modality][index] = out
            self.has[modality][index] = True
        for i, sample in zip(indices, samples):
            self.text[i] = {k: sample[k] for k in TEXT_KEYS if k in sample}
        self.done[chunk] = True

    def fill(self, progress: bool = True, processes: int | None = None) -> None:
        """Encode every chunk not encoded yet (with a progress bar): the first epoch's cost, paid up front.

        The samples of :data:`RENDER_GROUP` chunks at a time are rendered by ``processes`` worker processes
        (default: :func:`mimo_lib.threads.choose_render_processes`: as many as torch has threads), then the
        towers run on them here, with torch's threads: the two never share the cores. The features are the same with any
        number of processes (each sample is a pure function of its index).
        """
        from tqdm.auto import tqdm

        from mimo_lib.threads import map_in_processes

        todo = torch.nonzero(~self.done, as_tuple=True)[0].tolist()
        bar = tqdm(total=len(todo), desc="tower features", unit="chunk", disable=not progress or not todo, dynamic_ncols=True)
        with bar, map_in_processes(self.dataset.__getitem__, processes) as pool:
            for start in range(0, len(todo), RENDER_GROUP):
                group = todo[start : start + RENDER_GROUP]
                samples = pool.map([i for chunk in group for i in self._indices(chunk)])
                offset = 0
                for chunk in group:
                    size = len(self._indices(chunk))
                    self._encode_chunk(chunk, samples[offset : offset + size])
                    offset += size
                    bar.update(1)

    def batch(self, indices: Sequence[int]) -> Batch:
        """A :class:`Batch` of ``indices``: the collated text, ``has_video`` / ``has_audio``, and
        ``video_features`` / ``audio_features`` ``(B, tokens, D)`` (None if no sample has one) instead of media."""
        for i in indices:
            if not 0 <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} samples")
            if not self.done[i // self.chunk_size]:
                self._encode_chunk(i // self.chunk_size)
        text = collate_av_batch([self.text[i] for i in indices], self.pad_id)  # no media: video/audio None
        rows = torch.tensor(list(indices), dtype=torch.long)
        has = {modality: self.has[modality][rows] for modality in ("video", "audio")}  # (B,) each
        features = {}  # modality -> (B, tokens, D), or None if no sample of the batch has it
        for modality, stored in self.features.items():
            features[modality] = None if stored is None or not has[modality].any() else stored[rows]
        return replace(
            text, has_video=has["video"], has_audio=has["audio"],
            video_features=features["video"], audio_features=features["audio"],
        )
