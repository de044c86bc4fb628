"""A discrete audio tokenizer: a clip becomes a short row of integers, and back (chapter 10).

To *answer* with a sound, a decoder-only model must write sound the way it writes text: one token id
at a time, from a finite vocabulary. So sound needs a tokenizer. This one is a vector-quantised
autoencoder (VQ-VAE, van den Oord et al. 2017) over the very log-mel frames the audio tower reads
(:func:`mimo_lib.features.log_mel_spectrogram`: 80 bands, 100 frames a second)::

    waveform (B, N) --log-mel--> (B, 80, T) --encoder--> (B, D, T/4) --nearest codebook entry--> codes (B, T/4)
    codes (B, T/4) --codebook--> (B, D, T/4) --decoder--> log-mel (B, 80, T) --Griffin-Lim--> waveform (B, N)

* **Encoder.** 1-D convolutions over time (the 80 mel bands are the channels), two stride-2 steps:
  4x fewer steps, 25 vectors of size ``code_dim`` per second.
* **Quantiser.** Each vector is replaced by the nearest of ``codebook_size`` (256) learned vectors;
  its index is the *code*, the token a language model will write: 25 tokens of 8 bits per second.
* **Straight-through gradient.** "Nearest entry" has no gradient. The forward pass uses the entry
  ``q``, the backward pass pretends the quantiser was the identity: ``z + (q - z).detach()`` equals
  ``q`` in value and has the gradient of ``z``. The decoder's gradient thus reaches the encoder.
* **Commitment loss** ``beta * ||z - sg(q)||^2`` keeps the encoder's outputs near the entries they
  chose, so they do not drift away faster than the codebook can follow.
* **Codebook updates by moving averages (EMA)** instead of a codebook loss (VQ-VAE's appendix,
  SoundStream): each entry moves to the running mean of the vectors assigned to it. **Dead-code
  restarts** (Jukebox, SoundStream): an entry that nobody has chosen for a while is moved onto a
  random encoder output from the batch, so the whole codebook stays in use.
* **Decoder.** The mirror of the encoder, with transposed convolutions, back to 100 frames a second;
  trained with the mean absolute error on log-mel (the metric reported).
* **Waveform.** A log-mel frame has lost its phase and most of its frequency detail. Here
  :func:`mel_to_waveform` undoes the log, inverts the mel filter bank by non-negative least squares
  (:func:`inverse_mel_power`) and guesses a phase by Griffin-Lim
  (``torchaudio.transforms.GriffinLim``): alternate projections between "has this magnitude" and
  "is the STFT of some signal". It is slow-ish, deterministic and sounds phasey and metallic. A
  *neural vocoder* (WaveNet, HiFi-GAN, BigVGAN; or a codec that decodes straight to the waveform
  such as SoundStream / EnCodec / Mimi, trained with adversarial and multi-resolution STFT losses)
  learns the waveform from data: natural phase, sharp attacks, no smeared transients, in one
  fast forward pass. For this book's synthetic instruments the chapter-3 audio tower is the judge,
  and it reads log-mel again, so Griffin-Lim is enough to prove the point
  (``benchmarks/audio_codec.py`` measures it).

``python benchmarks/audio_codec.py --publish`` trains the shipped codec
(``mimo_lib/pretrained/audio_codec_toy.safetensors``: weights, and the config, training settings and
measured quality in the file's metadata); :func:`load_codec` reads it back.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from mimo_lib.atomic import atomic_save_tensors
from mimo_lib.constants import SAMPLE_RATE
from mimo_lib.errors import MimoInputError
from mimo_lib.features import WHISPER_HOP_LENGTH, WHISPER_N_FFT, WHISPER_N_MELS, log_mel_spectrogram
from mimo_lib.towers import PRETRAINED_DIR

#: The committed codec of the toy preset (``python benchmarks/audio_codec.py --publish`` writes it).
SHIPPED_CODEC = PRETRAINED_DIR / "audio_codec_toy.safetensors"
#: The ``kind`` a codec checkpoint records in its metadata.
CHECKPOINT_KIND = "mimo_lib.audio_codec"


class AudioCodeError(MimoInputError):
    """Audio codes that the codec cannot decode: not integers, wrong shape, or an id outside the codebook."""


class CodecCheckpointError(MimoInputError):
    """A codec checkpoint is missing, is not a codec checkpoint, or does not fit its recorded config."""


@dataclass(frozen=True)
class AudioCodecConfig:
    """The codec's shape. The defaults are the shipped toy codec."""

    sample_rate: int = SAMPLE_RATE  # audio samples per second the codec reads and writes
    num_mel_bins: int = WHISPER_N_MELS  # log-mel bands: the audio tower's 80
    n_fft: int = WHISPER_N_FFT  # STFT window of the log-mel and of Griffin-Lim: 400 samples, 25 ms
    hop_length: int = WHISPER_HOP_LENGTH  # STFT hop: 160 samples, 10 ms, 100 log-mel frames a second
    hidden_size: int = 96  # channels of the encoder's and decoder's convolutions
    num_res_blocks: int = 1  # residual blocks at each time resolution (encoder and decoder alike)
    downsample: int = 4  # log-mel frames per code (a power of 2): 100 / 4 = 25 codes a second
    code_dim: int = 64  # size of an encoder output vector and of a codebook entry
    codebook_size: int = 256  # entries in the codebook: codes are ids 0 .. codebook_size - 1
    commitment_cost: float = 0.25  # beta, the weight of the commitment loss ||z - sg(q)||^2
    ema_decay: float = 0.99  # how slowly codebook entries follow the mean of their assigned vectors
    dead_code_threshold: float = 0.5  # restart an entry whose running usage (vectors a step) falls below this
    griffin_lim_iters: int = 32  # Griffin-Lim iterations when turning a log-mel into a waveform

    def __post_init__(self) -> None:
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of 2 (got {self.downsample})")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2 (got {self.codebook_size})")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) (got {self.ema_decay})")

    @property
    def codes_per_second(self) -> float:
        return self.sample_rate / self.hop_length / self.downsample

    @property
    def bits_per_second(self) -> float:
        return self.codes_per_second * math.log2(self.codebook_size)


# --------------------------------------------------------------------------- #
# Checks on input
# --------------------------------------------------------------------------- #


def check_codes(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """``codes`` as a ``(B, T_codes)`` long tensor of ids in ``[0, codebook_size)``, or :class:`AudioCodeError`.

    A single row ``(T_codes,)`` is accepted and given a batch dimension.
    """
    if not isinstance(codes, torch.Tensor):
        codes = torch.as_tensor(codes)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise AudioCodeError(f"audio codes must be integer ids, got a {codes.dtype} tensor")
    if codes.dim() == 1:
        codes = codes[None]
    if codes.dim() != 2:
        raise AudioCodeError(f"audio codes must be (batch, codes) or (codes,), got shape {tuple(codes.shape)}")
    if codes.shape[1] == 0:
        raise AudioCodeError("audio codes are empty: a sound needs at least one code")
    bad = (codes < 0) | (codes >= codebook_size)
    if bad.any():
        row, column = (int(i) for i in bad.nonzero()[0])
        raise AudioCodeError(
            f"unknown audio code id {int(codes[row, column])} at row {row}, position {column}: "
            f"this codec's codebook has ids 0 to {codebook_size - 1}"
        )
    return codes.long()


def check_waveform(waveform: torch.Tensor, config: AudioCodecConfig) -> torch.Tensor:
    """``waveform`` as a ``(B, N)`` float tensor long enough for one code, or :class:`MimoInputError`."""
    if not isinstance(waveform, torch.Tensor) or not waveform.dtype.is_floating_point:
        raise MimoInputError("the codec encodes a float waveform tensor, (batch, samples) or (samples,)")
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise MimoInputError(f"the codec encodes (batch, samples) or (samples,) mono audio, got {tuple(waveform.shape)}")
    shortest = config.hop_length * config.downsample  # one code's worth of log-mel frames
    if waveform.shape[1] < max(shortest, config.n_fft):
        raise MimoInputError(
            f"a waveform of {waveform.shape[1]} samples is too short for one audio code "
            f"(at least {max(shortest, config.n_fft)} samples at {config.sample_rate} Hz)"
        )
    return waveform


# --------------------------------------------------------------------------- #
# The modules
# --------------------------------------------------------------------------- #


class ResBlock(nn.Module):
    """``x + conv1x1(gelu(conv3(gelu(x))))``: more depth and receptive field at the same time resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))  # (B, C, T)


class Encoder(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> vectors ``(B, code_dim, T / downsample)``."""

    def __init__(self, config: AudioCodecConfig) -> None:
        super().__init__()
        h = config.hidden_size
        layers: list[nn.Module] = [nn.Conv1d(config.num_mel_bins, h, kernel_size=3, padding=1)]
        for _ in range(int(math.log2(config.downsample))):
            layers += [ResBlock(h) for _ in range(config.num_res_blocks)]
            layers.append(nn.Conv1d(h, h, kernel_size=4, stride=2, padding=1))  # halves T
        layers += [ResBlock(h) for _ in range(config.num_res_blocks)]
        layers += [nn.GELU(), nn.Conv1d(h, config.code_dim, kernel_size=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.layers(mel)  # (B, code_dim, T / downsample)


class Decoder(nn.Module):
    """Quantised vectors ``(B, code_dim, T_codes)`` -> log-mel ``(B, n_mels, T_codes * downsample)``."""

    def __init__(self, config: AudioCodecConfig) -> None:
        super().__init__()
        h = config.hidden_size
        layers: list[nn.Module] = [nn.Conv1d(config.code_dim, h, kernel_size=3, padding=1)]
        layers += [ResBlock(h) for _ in range(config.num_res_blocks)]
        for _ in range(int(math.log2(config.downsample))):
            layers.append(nn.ConvTranspose1d(h, h, kernel_size=4, stride=2, padding=1))  # doubles T
            layers += [ResBlock(h) for _ in range(config.num_res_blocks)]
        layers += [nn.GELU(), nn.Conv1d(h, config.num_mel_bins, kernel_size=3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)  # (B, n_mels, T_codes * downsample)


class VectorQuantizer(nn.Module):
    """Nearest-entry quantisation with an EMA-updated codebook and dead-code restarts.

    The codebook and its running statistics are buffers, not parameters: the optimiser never touches
    them, :meth:`update_codebook` does (in training mode, inside :meth:`forward`).
    """

    def __init__(self, config: AudioCodecConfig) -> None:
        super().__init__()
        self.config = config
        k, d = config.codebook_size, config.code_dim
        self.register_buffer("codebook", torch.randn(k, d) / math.sqrt(d))  # (K, D)
        self.register_buffer("ema_count", torch.ones(k))  # (K,) running number of vectors assigned a step
        self.register_buffer("ema_sum", self.codebook.clone())  # (K, D) running sum of those vectors
        self.register_buffer("initialised", torch.tensor(False))  # set once the first batch seeded the codebook

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids of the nearest entries: ``(M, D)`` -> ``(M,)``."""
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every entry, so it is left out
        distances = self.codebook.pow(2).sum(1)[None, :] - 2 * z @ self.codebook.T  # (M, K)
        return distances.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T_codes)`` -> entries ``(B, D, T_codes)``."""
        return F.embedding(codes, self.codebook).transpose(1, 2)  # (B, D, T_codes)

    @torch.no_grad()
    def update_codebook(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """Move every entry towards the running mean of the vectors that chose it; restart unused entries."""
        config = self.config
        if not bool(self.initialised):  # seed the codebook with real encoder outputs, not random points
            pick = torch.randint(len(flat), (config.codebook_size,), device=flat.device)
            self.codebook.copy_(flat[pick])
            self.ema_sum.copy_(flat[pick])
            self.ema_count.fill_(1.0)
            self.initialised.fill_(True)
            return
        one_hot = F.one_hot(codes, config.codebook_size).type(flat.dtype)  # (M, K)
        decay = config.ema_decay
        self.ema_count.mul_(decay).add_(one_hot.sum(0), alpha=1 - decay)  # (K,)
        self.ema_sum.mul_(decay).add_(one_hot.T @ flat, alpha=1 - decay)  # (K, D)
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
        dead = self.ema_count < config.dead_code_threshold  # (K,)
        if dead.any():
            pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z (B, D, T_codes)`` -> (straight-through quantised ``(B, D, T_codes)``, codes ``(B, T_codes)``,
        commitment loss)."""
        b, d, t = z.shape
        flat = z.transpose(1, 2).reshape(b * t, d)  # (B*T, D)
        codes = self.nearest(flat.detach())  # (B*T,)
        if self.training:
            self.update_codebook(flat.detach(), codes)
            codes = self.nearest(flat.detach())  # the codebook moved: choose again
        q = self.lookup(codes.view(b, t))  # (B, D, T_codes)
        commitment = F.mse_loss(z, q.detach())
        quantised = z + (q - z).detach()  # value of q, gradient of z: the straight-through estimator
        return quantised, codes.view(b, t), commitment


class AudioCodec(nn.Module):
    """Waveform -> log-mel -> codes, and codes -> log-mel -> waveform.

    ``encode(waveform)`` gives ``(B, T_codes)`` long ids; ``decode(codes)`` a log-mel ``(B, n_mels, T)``
    in the units of :func:`mimo_lib.features.log_mel_spectrogram`; ``codes_to_waveform(codes)`` a
    ``(B, N)`` waveform by Griffin-Lim. ``forward(mel)`` is the training pass.
    """

    def __init__(self, config: AudioCodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or AudioCodecConfig()
        self.encoder = Encoder(self.config)
        self.quantizer = VectorQuantizer(self.config)
        self.decoder = Decoder(self.config)

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` or ``(N,)`` audio -> log-mel ``(B, n_mels, T)``, ``T`` cut to a multiple of ``downsample``."""
        c = self.config
        waveform = check_waveform(waveform, c)
        mel = log_mel_spectrogram(waveform, c.sample_rate, c.num_mel_bins, c.n_fft, c.hop_length)  # (B, n_mels, T)
        usable = mel.shape[-1] - mel.shape[-1] % c.downsample  # a partial last code would need padding to guess
        return mel[..., :usable]

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, n_mels, T)`` -> codes ``(B, T / downsample)``."""
        return self.quantizer(self.encoder(mel))[1]

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` or ``(N,)`` audio -> codes ``(B, T_codes)`` long, 25 a second by default."""
        was_training = self.training
        self.eval()  # encoding must not move the codebook
        codes = self.encode_mel(self.features(waveform))
        self.train(was_training)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T_codes)`` (checked with :func:`check_codes`) -> log-mel ``(B, n_mels, T_codes * downsample)``."""
        codes = check_codes(codes, self.config.codebook_size).to(self.quantizer.codebook.device)
        return self.decoder(self.quantizer.lookup(codes))

    @torch.no_grad()
    def codes_to_waveform(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T_codes)`` -> waveform ``(B, T_codes * downsample * hop_length)`` by Griffin-Lim."""
        return mel_to_waveform(self.decode(codes), self.config)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training pass on log-mel ``(B, n_mels, T)``: reconstruction, codes and losses."""
        z = self.encoder(mel)  # (B, D, T / downsample)
        quantised, codes, commitment = self.quantizer(z)
        reconstruction = self.decoder(quantised)  # (B, n_mels, T)
        mel_l1 = F.l1_loss(reconstruction, mel)
        loss = mel_l1 + self.config.commitment_cost * commitment
        return {"loss": loss, "mel_l1": mel_l1, "commitment": commitment, "reconstruction": reconstruction,
                "codes": codes}


# --------------------------------------------------------------------------- #
# From log-mel back to a waveform
# --------------------------------------------------------------------------- #

_INVERTERS: dict[tuple, tuple[torch.Tensor, nn.Module]] = {}


def _inverters(config: AudioCodecConfig) -> tuple[torch.Tensor, nn.Module]:
    """The mel filter bank ``(n_fft/2 + 1, n_mels)`` of ``log_mel_spectrogram`` and a Griffin-Lim, built once."""
    key = (config.sample_rate, config.num_mel_bins, config.n_fft, config.hop_length, config.griffin_lim_iters)
    if key not in _INVERTERS:
        filter_bank = torchaudio.functional.melscale_fbanks(
            n_freqs=config.n_fft // 2 + 1, f_min=0.0, f_max=config.sample_rate / 2, n_mels=config.num_mel_bins,
            sample_rate=config.sample_rate, norm="slaney", mel_scale="slaney",  # as log_mel_spectrogram's
        )
        griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=config.n_fft, hop_length=config.hop_length, power=2.0, n_iter=config.griffin_lim_iters,
            rand_init=False,  # start from zero phase: the same mel always gives the same waveform
        )
        _INVERTERS[key] = (filter_bank, griffin_lim)
    return _INVERTERS[key]


def inverse_mel_power(mel_power: torch.Tensor, filter_bank: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Mel power ``(B, n_mels, T)`` -> linear-frequency power ``(B, n_freqs, T)`` by non-negative least squares.

    Solves ``min ||A S - M||^2`` over ``S >= 0``, ``A = filter_bank.T``, by multiplicative updates
    ``S <- S * (A^T M) / (A^T A S)`` (as NMF does), starting from every mel band's power spread over its
    bins. Why not ``torchaudio.transforms.InverseMelScale``: it takes the plain least-squares solution
    and clamps it at zero. 80 bands for 201 bins is underdetermined and the lowest bins are barely
    covered by any filter, so a log-mel that no real spectrum has (what a decoder outputs) sends those
    bins to 10^9 and the waveform is one loud hum. A non-negative solution cannot do that.
    """
    a = filter_bank.T.to(mel_power)  # (n_mels, n_freqs)
    numerator = a.T @ mel_power  # (B, n_freqs, T): A^T M, fixed
    gram = a.T @ a  # (n_freqs, n_freqs)
    spectrogram = numerator / (gram.sum(dim=1)[:, None] + 1e-10)  # (B, n_freqs, T): the starting point
    for _ in range(iters):
        spectrogram = spectrogram * numerator / (gram @ spectrogram + 1e-10)
    return spectrogram


@torch.no_grad()
def mel_to_waveform(mel: torch.Tensor, config: AudioCodecConfig | None = None) -> torch.Tensor:
    """Log-mel ``(B, n_mels, T)`` (units of :func:`~mimo_lib.features.log_mel_spectrogram`) -> ``(B, T * hop)``.

    1. undo the scaling and the log: ``power = 10 ** (4 * mel - 4)``;
    2. repeat the last frame: the centred STFT has ``T + 1`` frames for ``T * hop`` samples, and
       ``log_mel_spectrogram`` dropped the last one;
    3. mel power -> linear-frequency power (:func:`inverse_mel_power`);
    4. a phase by Griffin-Lim; a waveform louder than 0.99 is scaled down to a peak of 0.99.
    """
    config = config or AudioCodecConfig()
    filter_bank, griffin_lim = _inverters(config)
    power = torch.pow(10.0, 4.0 * mel.float() - 4.0)  # (B, n_mels, T)
    power = torch.cat([power, power[..., -1:]], dim=-1)  # (B, n_mels, T + 1)
    spectrogram = inverse_mel_power(power, filter_bank)  # (B, n_fft/2 + 1, T + 1)
    waveform = griffin_lim.to(mel.device)(spectrogram)  # (B, T * hop)
    peak = waveform.abs().amax(dim=-1, keepdim=True)  # (B, 1)
    return waveform / (peak / 0.99).clamp(min=1.0)


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def train_codec(
    codec: AudioCodec,
    mels: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    time_budget_s: float | None = None,
    log_every: int = 0,
) -> list[dict[str, float]]:
    """Adam on random batches of ``mels`` ``(num_clips, n_mels, T)``, cosine-decayed ``lr``; returns a log.

    Every entry of the log has ``step``, ``loss``, ``mel_l1`` and ``codes_used`` (distinct codes in the
    batch). ``time_budget_s`` stops early, as the towers' pretraining does in the notebooks.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the codebook's seeding and restarts draw from the global generator
    optimizer = torch.optim.Adam(codec.parameters(), lr=lr)
    codec.train()
    log: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        batch = mels[torch.randint(len(mels), (batch_size,), generator=generator)]  # (B, n_mels, T)
        out = codec(batch)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"non-finite codec loss at step {step}: lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        entry = {"step": step, "loss": out["loss"].item(), "mel_l1": out["mel_l1"].item(),
                 "codes_used": int(out["codes"].unique().numel())}
        log.append(entry)
        if log_every and step % log_every == 0:
            print(f"step {step:5d}  loss {entry['loss']:.4f}  mel L1 {entry['mel_l1']:.4f}  "
                  f"codes used {entry['codes_used']}", flush=True)
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            break
    codec.eval()
    return log


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #


def save_codec(codec: AudioCodec, path: str | Path, extra: dict | None = None) -> Path:
    """Write the codec's weights and codebook to one safetensors file, atomically.

    The metadata holds ``kind``, the ``codec_config`` (JSON) and ``extra`` (JSON: training settings,
    measured quality), so :func:`load_codec` can rebuild the codec without being told its shape.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "kind": CHECKPOINT_KIND,
        "codec_config": json.dumps(asdict(codec.config)),
        "extra": json.dumps(extra or {}),
    }
    return atomic_save_tensors(path, codec.state_dict(), metadata)


def read_codec_metadata(path: str | Path = SHIPPED_CODEC) -> dict:
    """A codec checkpoint's metadata, parsed: ``{"kind", "codec_config": {...}, "extra": {...}}``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CodecCheckpointError(f"codec checkpoint {path} not found; `python benchmarks/audio_codec.py` makes one")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("kind") != CHECKPOINT_KIND:
            raise KeyError(f"kind is {meta.get('kind')!r}, not {CHECKPOINT_KIND!r}")
        return {"kind": meta["kind"], "codec_config": json.loads(meta["codec_config"]),
                "extra": json.loads(meta.get("extra", "{}"))}
    except Exception as error:  # not safetensors, no metadata, or another kind of checkpoint
        raise CodecCheckpointError(
            f"{path} is not an audio codec checkpoint of mimo_lib.audio_codec ({type(error).__name__}: {error})"
        ) from None


def load_codec(path: str | Path = SHIPPED_CODEC, map_location: str | torch.device = "cpu") -> AudioCodec:
    """Rebuild a codec from :func:`save_codec`'s file (by default the shipped one), in eval mode."""
    from safetensors.torch import load_file

    meta = read_codec_metadata(path)
    try:
        config = AudioCodecConfig(**meta["codec_config"])
    except (TypeError, ValueError) as error:
        raise CodecCheckpointError(f"{path}: its codec_config does not fit AudioCodecConfig ({error})") from None
    codec = AudioCodec(config)
    try:
        codec.load_state_dict(load_file(str(path), device=str(map_location)))
    except RuntimeError as error:
        raise CodecCheckpointError(f"{path}: the weights do not fit the recorded codec_config ({error})") from None
    return codec.eval()


__all__ = [
    "CHECKPOINT_KIND",
    "SHIPPED_CODEC",
    "AudioCodeError",
    "AudioCodec",
    "AudioCodecConfig",
    "CodecCheckpointError",
    "Decoder",
    "Encoder",
    "VectorQuantizer",
    "check_codes",
    "check_waveform",
    "load_codec",
    "inverse_mel_power",
    "mel_to_waveform",
    "read_codec_metadata",
    "save_codec",
    "train_codec",
]
