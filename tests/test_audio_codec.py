"""The discrete audio tokenizer of chapter 10: shapes, learning, the straight-through gradient, checks, checkpoints."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from mimo_lib.audio_codec import (
    SHIPPED_CODEC,
    AudioCodec,
    AudioCodecConfig,
    AudioCodeError,
    CodecCheckpointError,
    check_codes,
    load_codec,
    mel_to_waveform,
    read_codec_metadata,
    save_codec,
    train_codec,
)
from mimo_lib.data.synthetic import SyntheticConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.features import log_mel_spectrogram
from mimo_lib.pretrain_towers import make_pretraining_set
from mimo_lib.towers import shipped_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# a codec of 10 s of training: narrow, a small codebook that follows its vectors fast, few Griffin-Lim iterations
TINY = AudioCodecConfig(
    hidden_size=64, num_res_blocks=1, code_dim=16, codebook_size=32, ema_decay=0.9, griffin_lim_iters=4
)


@pytest.fixture(scope="module")
def clips(one_thread):
    """24 one-event synthetic clips of 1 s: (waveforms (24, 16000), log-mels (24, 80, 100))."""
    waves, _ = make_pretraining_set("audio", 24, 7, SyntheticConfig())
    return waves, log_mel_spectrogram(waves)


@pytest.fixture(scope="module")
def trained_tiny(clips):
    """A tiny codec trained for a few seconds on the first 16 clips."""
    torch.manual_seed(0)
    codec = AudioCodec(TINY)
    log = train_codec(codec, clips[1][:16], steps=100, batch_size=8, lr=3e-3, seed=0)
    return codec, log


def test_shapes(clips, one_thread):
    waves, _ = clips
    codec = AudioCodec(TINY).eval()
    codes = codec.encode(waves[:2])  # (2, 16000) -> 100 frames -> 25 codes
    assert codes.shape == (2, 25) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < TINY.codebook_size
    assert codec.encode(waves[0]).shape == (1, 25), "a single (N,) clip gets a batch dimension"
    longer = torch.cat([waves[:1], waves[:1, :640]], dim=1)  # (1, 16640): 104 log-mel frames
    assert codec.encode(longer[:, :16500]).shape == (1, 25), "103 frames: a partial last code is cut"
    assert codec.encode(longer).shape == (1, 26)
    assert codec.decode(codes).shape == (2, 80, 100)
    assert codec.codes_to_waveform(codes).shape == (2, 16000)
    assert TINY.codes_per_second == 25 and TINY.bits_per_second == 25 * 5


def test_round_trip_beats_the_mean_baseline(clips, trained_tiny):
    """Codes carry the clip: decode(encode(x)) is much closer to x than the training set's mean frame."""
    waves, mels = clips
    codec, log = trained_tiny
    assert log[-1]["mel_l1"] < log[0]["mel_l1"] * 0.7, "training does not lower the reconstruction loss"
    held_waves, held_mels = waves[16:], mels[16:]  # 8 clips the codec never saw
    reconstruction = codec.decode(codec.encode(held_waves)).detach()  # (8, 80, 100)
    codec_error = (reconstruction - held_mels).abs().mean().item()
    baseline_error = (mels[:16].mean(dim=(0, 2), keepdim=True) - held_mels).abs().mean().item()
    assert codec_error < 0.7 * baseline_error, (codec_error, baseline_error)


def test_straight_through_gradient_reaches_the_encoder(clips, one_thread):
    codec = AudioCodec(TINY).train()
    out = codec(clips[1][:4])
    out["mel_l1"].backward()  # the reconstruction loss alone: its only way to the encoder is straight through
    encoder_grad = sum(p.grad.abs().sum().item() for p in codec.encoder.parameters())
    assert encoder_grad > 0
    assert not any(p.requires_grad for p in codec.quantizer.buffers()), "the codebook is not trained by the optimiser"


def test_quantised_values_are_codebook_entries(clips, one_thread):
    codec = AudioCodec(TINY).train()
    z = codec.encoder(clips[1][:2])  # (2, D, 25); the first call seeds the codebook from z
    quantised, codes, commitment = codec.quantizer(z)
    assert torch.allclose(quantised, codec.quantizer.lookup(codes), atol=1e-6)
    assert torch.allclose(commitment, ((z - quantised) ** 2).mean())
    # every vector took its nearest entry
    flat = z.detach().transpose(1, 2).reshape(-1, TINY.code_dim)  # (50, D)
    assert torch.equal(torch.cdist(flat, codec.quantizer.codebook).argmin(1), codes.flatten())


def test_dead_codes_are_restarted_on_encoder_outputs(one_thread):
    config = replace(TINY, codebook_size=8, code_dim=4)
    quantizer = AudioCodec(config).quantizer.train()
    quantizer(torch.randn(2, 4, 10))  # seeds the codebook
    quantizer.ema_count[3] = 0.0  # entry 3: nobody has chosen it for a long time
    z = torch.randn(2, 4, 10) + 5.0  # far from every entry
    quantizer(z)
    flat = z.transpose(1, 2).reshape(-1, 4)
    assert torch.isclose(flat, quantizer.codebook[3]).all(dim=1).any(), "the dead entry was not moved onto an output"


def test_encoding_does_not_move_the_codebook(clips, trained_tiny):
    codec, _ = trained_tiny
    before = codec.quantizer.codebook.clone()
    codec.train()
    codec.encode(clips[0][:4])
    assert torch.equal(codec.quantizer.codebook, before)
    assert codec.training, "encode restores the training mode it found"
    codec.eval()


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.tensor([[1, 2, 32]]), "unknown audio code id 32"),
        (torch.tensor([[-1, 2]]), "unknown audio code id -1"),
        (torch.tensor([[1.0, 2.0]]), "integer ids"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "shape"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
    ],
)
def test_check_codes_refuses_bad_codes(codes, message):
    with pytest.raises(AudioCodeError, match=message):
        check_codes(codes, codebook_size=32)
    assert issubclass(AudioCodeError, MimoInputError)


def test_decode_refuses_an_unknown_code(one_thread):
    codec = AudioCodec(TINY)
    with pytest.raises(AudioCodeError, match="codebook has ids 0 to 31"):
        codec.decode(torch.tensor([[0, 5, 40]]))
    assert check_codes(torch.tensor([0, 31]), 32).shape == (1, 2)


def test_encode_refuses_bad_waveforms(one_thread):
    codec = AudioCodec(TINY)
    with pytest.raises(MimoInputError, match="too short"):
        codec.encode(torch.zeros(1, 300))
    with pytest.raises(MimoInputError, match="float waveform"):
        codec.encode(torch.zeros(1, 16000, dtype=torch.int16))


def test_save_load_round_trip_is_bitwise(clips, trained_tiny, tmp_path):
    codec, _ = trained_tiny
    path = save_codec(codec, tmp_path / "codec.safetensors", extra={"note": "tiny"})
    assert list(tmp_path.iterdir()) == [path], "the atomic write left a temporary file"
    loaded = load_codec(path)
    assert loaded.config == codec.config and not loaded.training
    for (name, a), (_, b) in zip(codec.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    codes = codec.encode(clips[0][:3])
    assert torch.equal(loaded.encode(clips[0][:3]), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    assert read_codec_metadata(path)["extra"] == {"note": "tiny"}


def test_load_refuses_what_is_not_a_codec(tmp_path):
    with pytest.raises(CodecCheckpointError, match="not found"):
        load_codec(tmp_path / "missing.safetensors")
    with pytest.raises(CodecCheckpointError, match="not an audio codec checkpoint"):
        load_codec(shipped_checkpoint("audio"))  # a tower checkpoint
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CodecCheckpointError, match="not an audio codec checkpoint"):
        load_codec(tmp_path / "junk.safetensors")


def test_griffin_lim_inverts_a_real_log_mel(clips, one_thread):
    """Without any codes, log-mel -> waveform -> log-mel comes back close: the vocoder's own error is small."""
    _, mels = clips
    waves = mel_to_waveform(mels[:2], AudioCodecConfig())  # (2, 16000)
    assert waves.shape == (2, 16000) and waves.abs().max() <= 0.99 + 1e-6
    assert (log_mel_spectrogram(waves) - mels[:2]).abs().mean() < 0.05


def test_shipped_codec_loads_and_meets_its_floor(clips, one_thread):
    codec = load_codec()
    assert codec.config == AudioCodecConfig()
    meta = read_codec_metadata(SHIPPED_CODEC)["extra"]
    metrics = meta["metrics"]
    mae = metrics["mel_mae"]
    accuracy = metrics["tower_zero_shot_accuracy"]
    assert mae["codec_mel"] < 0.5 * mae["mean_baseline"]
    assert accuracy["original"]["caption"] >= 0.95
    assert accuracy["codec_mel"]["instrument"] >= 0.9 and accuracy["codec_mel"]["pitch"] >= 0.9
    assert accuracy["codec_waveform"]["instrument"] >= 0.75 and accuracy["codec_waveform"]["pitch"] >= 0.9
    assert metrics["codes_used"] >= 64, "most of the codebook is dead"
    # the recorded numbers are the benchmark's
    result = json.loads((ROOT / "benchmarks" / "results" / "audio_codec.json").read_text(encoding="utf-8"))
    assert result["metrics"] == metrics and result["training"] == meta["training"]
    assert result["codec_config"]["codebook_size"] == asdict(codec.config)["codebook_size"]
    # and the weights still do what the numbers say, on clips of another seed
    waves, mels = clips
    error = (codec.decode(codec.encode(waves)).detach() - mels).abs().mean().item()
    assert error < 1.5 * mae["codec_mel"], (error, mae["codec_mel"])
