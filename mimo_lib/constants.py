"""The numbers every part of ``mimo_lib`` must agree on, written once.

The special tokens are here, in id order: the tokenizer gives them ids 0, 1, 2, ... and
:class:`mimo_lib.config.MIMOConfig` derives its ``pad``/``eos``/``video``/``audio`` ids from the same tuple,
so the two can never disagree.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- special tokens

#: ``<pad>`` (padding), ``<bos>``/``<eos>`` (begin/end of sequence), the placeholders ``<video>`` and
#: ``<audio>`` that the model swaps for a clip's embeddings, and ``<image>`` (reserved: id 5 is kept so the
#: ids of the committed models stay valid; no dataset accepts images yet).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<video>", "<audio>", "<image>")
PAD_TOKEN_ID = SPECIAL_TOKENS.index("<pad>")
BOS_TOKEN_ID = SPECIAL_TOKENS.index("<bos>")
EOS_TOKEN_ID = SPECIAL_TOKENS.index("<eos>")
VIDEO_TOKEN_ID = SPECIAL_TOKENS.index("<video>")
AUDIO_TOKEN_ID = SPECIAL_TOKENS.index("<audio>")

# --------------------------------------------------------------------------- labels and prompts

#: Label value the loss skips: prompt text, padding and the positions of video and audio tokens
#: (``torch.nn.functional.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100

#: How a question about a clip starts: one placeholder per sense, each on its own line.
AV_PROMPT = "<video>\n<audio>\n"

# --------------------------------------------------------------------------- audio

#: Every audio tower here (and every Whisper checkpoint) reads 16 kHz audio.
SAMPLE_RATE = 16_000
#: Analysis window of one feature frame: 25 ms (400 samples at 16 kHz).
FEATURE_WINDOW_S = 0.025
#: Hop between feature frames: 10 ms (160 samples at 16 kHz), for Whisper's log-mel and BEATs' Kaldi fbank alike.
FEATURE_HOP_S = 0.010
#: Feature frames per second of audio (1 / hop).
FEATURE_FRAMES_PER_SECOND = round(1 / FEATURE_HOP_S)
#: The window and the hop in samples at :data:`SAMPLE_RATE`.
FEATURE_WINDOW_SAMPLES = round(FEATURE_WINDOW_S * SAMPLE_RATE)
FEATURE_HOP_SAMPLES = round(FEATURE_HOP_S * SAMPLE_RATE)

# --------------------------------------------------------------------------- seeds

#: Held-out synthetic clips are drawn with ``seed + HELD_OUT_SEED_OFFSET``: far from any training seed, so no
#: held-out clip is ever a training clip (synthetic clips are pure functions of ``(seed, index)``).
HELD_OUT_SEED_OFFSET = 1_000_003
