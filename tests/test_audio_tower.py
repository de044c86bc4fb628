"""The audio tower: features, shapes, pooling, time locality, parameter counts, and the Whisper checkpoint wrapper."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torchaudio

from mimo_lib.audio_tower import (
    AudioTower,
    HFWhisperAudioTower,
    audio_tower_num_parameters,
    build_audio_tower,
    fit_waveform,
    pool_sequence,
)
from mimo_lib.config import AudioTowerConfig, get_preset
from mimo_lib.data.dataset import fit_audio_length
from mimo_lib.data.synthetic import PITCHES, synthesize_note
from mimo_lib.features import BEATS_FBANK_MEAN, BEATS_FBANK_STD, kaldi_fbank, log_mel_spectrogram
from mimo_lib.towers import sinusoids

SR = 16_000


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def small(backbone: str = "whisper", **overrides) -> AudioTowerConfig:
    """A narrow, shallow tower: the same code paths as the presets, fast on a CPU."""
    fields = dict(backbone_type=backbone, hidden_size=32, num_layers=1, num_attention_heads=4, ffn_hidden_size=64)
    if backbone == "beats":
        fields.update(num_mel_bins=128, audio_seq_len=7)
    fields.update(overrides)
    return AudioTowerConfig(**fields)


def tone(frequency: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.5 * torch.sin(2 * math.pi * frequency * t)  # (N,)


# --------------------------------------------------------------------------- #
# Waveform length and features
# --------------------------------------------------------------------------- #


def test_fit_waveform_follows_the_dataset_rule():
    long, short = torch.randn(20_000), torch.randn(9_000)
    assert torch.equal(fit_waveform(long, SR)[0], fit_audio_length(long, SR))
    assert torch.equal(fit_waveform(short, SR)[0], fit_audio_length(short, SR))
    batch = fit_waveform(torch.stack([long[:9_000], short]), SR)
    assert batch.shape == (2, SR) and torch.equal(batch[1], fit_audio_length(short, SR))
    with pytest.raises(ValueError, match=r"\(N,\) or \(B, N\)"):
        fit_waveform(torch.zeros(2, 2, 100), SR)


def test_feature_shapes_for_one_second():
    waves = torch.randn(3, SR) * 0.1
    assert AudioTower(small()).features(waves).shape == (3, 80, 100)  # log-mel
    assert AudioTower(small("beats")).features(waves).shape == (3, 128, 100)  # fbank
    assert kaldi_fbank(waves).shape == (3, 128, 100)
    assert kaldi_fbank(waves[0]).shape == (128, 100)
    # one (N,) clip is a batch of one; longer audio is cropped to clip_duration_s
    tower = AudioTower(small())
    assert tower.features(waves[0]).shape == (1, 80, 100)
    longer = torch.cat([waves[0], torch.ones(5_000)])
    torch.testing.assert_close(tower.features(longer), tower.features(waves[:1]))


def test_log_mel_features_are_whisper_log_mel():
    waves = torch.randn(2, SR) * 0.1
    torch.testing.assert_close(AudioTower(small()).features(waves), log_mel_spectrogram(waves))


def test_kaldi_fbank_matches_torchaudio_kaldi():
    torch.manual_seed(0)
    wave = torch.randn(2, SR) * 0.1
    reference = torchaudio.compliance.kaldi.fbank(
        wave[1:2] * 2**15, num_mel_bins=128, sample_frequency=SR, frame_length=25, frame_shift=10, dither=0.0
    ).T  # (128, 98): Kaldi does not centre frames, so 1 s gives (16000 - 400) // 160 + 1 = 98
    raw = kaldi_fbank(wave, normalize=False)  # (2, 128, 100): zero-padded to 100 frames
    assert reference.shape == (128, 98)
    torch.testing.assert_close(raw[1, :, :98], reference)
    normalised = kaldi_fbank(wave)
    torch.testing.assert_close(normalised, (raw - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD))
    # the tower's beats features are exactly these
    torch.testing.assert_close(AudioTower(small("beats")).features(wave), normalised)


def test_kaldi_fbank_rejects_too_short_audio():
    with pytest.raises(ValueError, match="too short"):
        kaldi_fbank(torch.zeros(100))


@pytest.mark.parametrize("features", [log_mel_spectrogram, kaldi_fbank])
def test_higher_note_peaks_in_a_higher_bin(features):
    def flute(frequency: float) -> torch.Tensor:  # the synthetic data's flute: a fundamental plus a weak octave
        return torch.from_numpy(synthesize_note("flute", frequency, 1.0, SR, np.random.default_rng(0)))

    for wave_of in (tone, flute):
        low = features(wave_of(PITCHES["low"]))  # 220 Hz
        high = features(wave_of(PITCHES["high"]))  # 660 Hz
        assert high.mean(-1).argmax() > low.mean(-1).argmax() + 5


# --------------------------------------------------------------------------- #
# Shapes and the config's checks
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("audio_seq_len", [50, 25, 10, 1])
def test_whisper_output_shapes(audio_seq_len):
    tower = AudioTower(small(audio_seq_len=audio_seq_len))
    waves = torch.randn(2, SR) * 0.1
    assert tower.encode(waves).shape == (2, 50, 32)  # 100 frames, stride 2
    assert tower(waves).shape == (2, audio_seq_len, 32)
    assert tower.output_size == 32


@pytest.mark.parametrize("audio_seq_len", [56, 14, 7, 8])
def test_beats_output_shapes(audio_seq_len):
    tower = AudioTower(small("beats", audio_seq_len=audio_seq_len))
    waves = torch.randn(2, SR) * 0.1
    assert tower.encode(waves).shape == (2, 56, 32)  # 8 frequency x 7 time patches (100 frames padded to 112)
    assert tower(waves).shape == (2, audio_seq_len, 32)


def test_odd_frame_count_keeps_encoder_seq_len():
    config = small(clip_duration_s=1.01)  # 101 frames; the stride-2 conv makes 51, the config promises 101 // 2
    assert config.encoder_seq_len == 50
    assert AudioTower(config)(torch.randn(SR)).shape == (1, 25, 32)


def test_audio_seq_len_must_be_positive():
    with pytest.raises(ValueError, match=r"--audio-seq-len 0: .*positive whole number"):
        AudioTowerConfig(audio_seq_len=0)
    with pytest.raises(ValueError, match=r"--audio-seq-len 2.5"):
        AudioTowerConfig(audio_seq_len=2.5)
    with pytest.raises(ValueError, match=r"--audio-seq-len -3"):
        pool_sequence(torch.zeros(1, 50, 4), -3)


@pytest.mark.parametrize("length, tokens", [(50, 25), (50, 10), (56, 7), (56, 14), (50, 50), (50, 1)])
def test_pooling_that_divides_is_todays_reshape_mean_bit_for_bit(length, tokens):
    # the committed models pool this way: token i = mean of positions i*k .. i*k + k - 1, summed in that order
    x = torch.randn(3, length, 16)
    k = length // tokens
    expected = torch.stack([x[:, i * k : (i + 1) * k].mean(dim=1) for i in range(tokens)], dim=1)
    assert torch.equal(pool_sequence(x, tokens), x.reshape(3, tokens, k, 16).mean(dim=2))
    torch.testing.assert_close(pool_sequence(x, tokens), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length, tokens", [(50, 24), (56, 25), (50, 7), (56, 100), (56, 1024), (50, 51)])
def test_any_token_count_averages_the_positions_its_time_span_touches(length, tokens):
    x = torch.randn(2, length, 8)
    pooled = pool_sequence(x, tokens)
    assert pooled.shape == (2, tokens, 8)
    for i in range(tokens):
        first, last = (i * length) // tokens, math.ceil((i + 1) * length / tokens)  # span [i S/n, (i+1) S/n)
        torch.testing.assert_close(pooled[:, i], x[:, first:last].mean(dim=1))
    if tokens > length:  # more tokens than positions: every position appears, in time order, repeated
        assert pooled.shape[1] == tokens and (last - first) <= 2


def test_the_seed_command_audio_settings_build_and_run():
    # --audio-backbone-type beats --audio-seq-len 1024: 56 positions for 1 s, each repeated about 18 times
    config = AudioTowerConfig(backbone_type="beats", audio_seq_len=1024, hidden_size=32, num_layers=1,
                              num_attention_heads=4, ffn_hidden_size=64)
    assert config.encoder_seq_len == 56 and config.pool_factor == pytest.approx(56 / 1024)
    assert AudioTower(config)(torch.randn(2, SR)).shape == (2, 1024, 32)
    assert AudioTowerConfig(audio_seq_len=24).pool_factor == pytest.approx(50 / 24)
    assert AudioTowerConfig(audio_seq_len=25).pool_factor == 2 and isinstance(AudioTowerConfig().pool_factor, int)


def test_wrong_features_name_what_to_change():
    tower = AudioTower(small())
    with pytest.raises(ValueError, match="num_mel_bins=80"):
        tower.encode_features(torch.zeros(1, 128, 100))


def test_batched_clips_are_encoded_independently():
    torch.manual_seed(0)
    for config in (small(), small("beats")):
        tower = AudioTower(config).eval()
        waves = torch.randn(3, SR) * 0.1
        torch.testing.assert_close(tower(waves)[1], tower(waves[1])[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- #
# Pooling and time locality
# --------------------------------------------------------------------------- #


def test_pool_sequence_averages_its_own_window_only():
    x = torch.randn(2, 12, 5)
    pooled = pool_sequence(x, 4)  # k = 3
    torch.testing.assert_close(pooled[:, 1], x[:, 3:6].mean(1))
    bumped = x.clone()
    bumped[:, 7] += 1.0  # position 7 belongs to token 7 // 3 = 2
    changed = (pool_sequence(bumped, 4) - pooled).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, False, True, False]


def changed_tokens(tower: AudioTower, features: torch.Tensor, frames: slice, mels: slice = slice(None)) -> list[int]:
    """Which output tokens move when only ``features[:, mels, frames]`` changes."""
    bumped = features.clone()
    bumped[:, mels, frames] += 3.0
    with torch.no_grad():
        diff = tower.pool(tower.encode_features(bumped)) - tower.pool(tower.encode_features(features))
    return torch.nonzero(diff.abs().amax(dim=(0, 2)) > 1e-6).flatten().tolist()


def test_beats_patches_are_time_major():
    # position t * 8 + f is frequency patch f of time patch t: bump one 16 x 16 patch, see which position moves
    tower = AudioTower(small("beats", num_layers=0))
    features = torch.randn(1, 128, 100)
    bumped = features.clone()
    bumped[:, 2 * 16 : 3 * 16, 5 * 16 : 6 * 16] += 1.0  # frequency patch 2, time patch 5
    with torch.no_grad():
        diff = tower.embed(bumped) - tower.embed(features)  # (1, 56, D)
    assert torch.nonzero(diff.abs().amax(dim=(0, 2)) > 0).flatten().tolist() == [5 * 8 + 2]


def test_beats_audio_tokens_are_local_in_time():
    # without attention (num_layers=0) every step is per position, so the pooled tokens show the patch order:
    # token t of 7 is time patch t (frames 16t .. 16t + 15, 160 ms); of 14, tokens 2t and 2t + 1 (half the bins each)
    features = torch.randn(1, 128, 100)
    per_step = AudioTower(small("beats", num_layers=0, audio_seq_len=7))
    assert changed_tokens(per_step, features, slice(48, 64)) == [3]
    assert changed_tokens(per_step, features, slice(96, 100)) == [6]  # the last, padded patch
    half_step = AudioTower(small("beats", num_layers=0, audio_seq_len=14))
    assert changed_tokens(half_step, features, slice(48, 64)) == [6, 7]
    assert changed_tokens(half_step, features, slice(48, 64), mels=slice(0, 16)) == [6]  # low bins: first half
    # with attention, every token hears the whole clip
    mixed = AudioTower(small("beats", num_layers=1, audio_seq_len=7))
    assert changed_tokens(mixed, features, slice(48, 64)) == list(range(7))


def test_whisper_stem_is_local_in_time():
    # conv k=3, then conv k=3 stride 2: encoder position j sees frames 2j - 2 .. 2j + 2; with 25 tokens, token i
    # averages positions 2i, 2i + 1, i.e. frames 4i - 2 .. 4i + 4
    tower = AudioTower(small(num_layers=0, audio_seq_len=25))
    features = torch.randn(1, 80, 100)
    assert changed_tokens(tower, features, slice(41, 42)) == [10]  # frame 41: positions 20, 21 -> token 10
    assert changed_tokens(tower, features, slice(40, 41)) == [9, 10]  # frame 40 is seen by position 19 too


# --------------------------------------------------------------------------- #
# Parameters and gradients
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("preset", ["toy", "small", "llava-avlm-7b"])
def test_closed_form_parameter_count(preset):
    config = get_preset(preset).audio
    with torch.device("meta"):
        tower = AudioTower(config)
    assert audio_tower_num_parameters(config) == sum(p.numel() for p in tower.parameters())


@pytest.mark.parametrize(
    "config",
    [small("beats"), small("beats", beats_patch_size=32, audio_seq_len=4), small(normalize_output=False)],
    ids=["beats", "beats-patch32", "whisper-no-output-norm"],
)
def test_closed_form_parameter_count_variants(config):
    assert audio_tower_num_parameters(config) == sum(p.numel() for p in AudioTower(config).parameters())


def test_whisper_preset_is_whisper_base_shaped():
    # the same layers as transformers' Whisper-base encoder, less its 1500 x 512 position table (we compute
    # sinusoids instead), plus a bias on every key projection (Whisper has none) and the output LayerNorm
    transformers = pytest.importorskip("transformers")
    config = get_preset("llava-avlm-7b").audio
    whisper_base = transformers.WhisperConfig(
        d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80,
        max_source_positions=1500,
    )
    with torch.device("meta"):
        encoder = transformers.models.whisper.modeling_whisper.WhisperEncoder(whisper_base)
    theirs = sum(p.numel() for p in encoder.parameters()) - 1500 * 512
    assert audio_tower_num_parameters(config) == theirs + 6 * 512 + 2 * 512


@pytest.mark.parametrize("backbone", ["whisper", "beats"])
def test_gradients_reach_every_parameter(backbone):
    torch.manual_seed(0)
    tower = AudioTower(small(backbone))
    out = tower(torch.randn(2, SR) * 0.1)
    (out * torch.randn_like(out)).sum().backward()  # a random projection: LayerNorm outputs sum to a constant
    for name, param in tower.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_build_audio_tower_dispatch():
    assert isinstance(build_audio_tower(small()), AudioTower)
    assert isinstance(build_audio_tower(small("beats")), AudioTower)
    with pytest.raises(ValueError, match="build_audio_tower"):
        AudioTower(AudioTowerConfig(backbone_type="hf-whisper"))
    with pytest.raises(ValueError, match="no closed form"):
        audio_tower_num_parameters(AudioTowerConfig(backbone_type="hf-whisper"))


# --------------------------------------------------------------------------- #
# hf-whisper: a tiny random Whisper saved to a folder
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random 2-layer Whisper (d_model 32, 60 source positions = 120 frames = 1.2 s) in a local folder."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.WhisperConfig(
        vocab_size=16, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=60,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None,  # Whisper's defaults name ids beyond a tiny vocabulary
    )
    torch.manual_seed(0)
    model = transformers.WhisperModel(hf_config).eval()
    folder = tmp_path_factory.mktemp("tiny-whisper")
    model.save_pretrained(folder)
    return model, folder


def hf_config(folder, **overrides) -> AudioTowerConfig:
    fields = dict(backbone_type="hf-whisper", pretrained_path=str(folder), hidden_size=32, num_attention_heads=4)
    fields.update(overrides)
    return AudioTowerConfig(**fields)


def test_hf_whisper_matches_its_own_encoder(tiny_whisper):
    model, folder = tiny_whisper
    tower = build_audio_tower(hf_config(folder))
    assert isinstance(tower, HFWhisperAudioTower) and tower.output_size == 32
    waves = torch.randn(2, SR) * 0.1
    features = tower.features(waves)  # (2, 80, 100)
    padded = tower.pad_features(features)  # (2, 80, 120): what the encoder requires
    assert padded.shape == (2, 80, 120)
    with torch.no_grad():
        expected = model.get_encoder()(input_features=padded).last_hidden_state[:, :50]  # the 1 s of real audio
        torch.testing.assert_close(tower.encode(waves), expected)
        assert tower(waves).shape == (2, 25, 32)
    # our fixed positions are Whisper's
    torch.testing.assert_close(sinusoids(60, 32), model.get_encoder().embed_positions.weight)


def test_hf_whisper_pads_with_what_silence_looks_like(tiny_whisper):
    # Whisper pads the waveform with zeros to 30 s; padding the features with the log-mel floor is the same,
    # except for the two frames on each side of the join (torchaudio reflects at the clip's edge)
    _, folder = tiny_whisper
    tower = build_audio_tower(hf_config(folder))
    waves = torch.randn(2, SR) * 0.1
    padded = tower.pad_features(tower.features(waves))
    whole = log_mel_spectrogram(torch.nn.functional.pad(waves, (0, 120 * 160 - SR)))  # (2, 80, 120)
    torch.testing.assert_close(padded[..., :98], whole[..., :98])
    torch.testing.assert_close(padded[..., 103:], whole[..., 103:])


def test_hf_whisper_errors_say_what_to_do(tiny_whisper, tmp_path):
    _, folder = tiny_whisper
    with pytest.raises(ValueError, match="needs pretrained_path"):
        build_audio_tower(hf_config(folder, pretrained_path=None))
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        build_audio_tower(hf_config(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="hub name"):
        build_audio_tower(hf_config("openai/whisper-base"))  # never downloaded
    with pytest.raises(ValueError, match=r"num_mel_bins=80 \(config has 128\)"):
        build_audio_tower(hf_config(folder, num_mel_bins=128))
    with pytest.raises(ValueError, match=r"hidden_size=32 \(config has 64\)"):
        build_audio_tower(hf_config(folder, hidden_size=64))
    with pytest.raises(ValueError, match=r"clip_duration_s <= 1.2"):
        build_audio_tower(hf_config(folder, clip_duration_s=2.0))


def test_hf_whisper_without_transformers_says_how_to_install(tiny_whisper, monkeypatch):
    _, folder = tiny_whisper
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[hf\]"'):
        build_audio_tower(hf_config(folder))


# --------------------------------------------------------------------------- #
# Parameter names: Whisper's, and the old names still load
# --------------------------------------------------------------------------- #


def old_names(state: dict) -> dict:
    """The same weights under the names the audio layers had before they took Whisper's (fused qkv)."""
    old = {}
    for key, value in state.items():
        for new, before in (("self_attn_layer_norm.", "norm1."), ("self_attn.out_proj.", "attn.proj."),
                            ("final_layer_norm.", "norm2."), ("fc1.", "mlp.fc1."), ("fc2.", "mlp.fc2.")):
            key = key.replace(new, before)
        old[key] = value
    for key in [k for k in old if ".self_attn.q_proj." in k]:
        kind = key.rsplit(".", 1)[1]
        layer = key.split("self_attn.q_proj.")[0]
        parts = [old.pop(f"{layer}self_attn.{p}.{kind}") for p in ("q_proj", "k_proj", "v_proj")]
        old[f"{layer}attn.qkv.{kind}"] = torch.cat(parts)
    return old


def test_checkpoints_with_the_old_parameter_names_still_load():
    torch.manual_seed(0)
    tower = AudioTower(small())
    state = tower.state_dict()
    legacy = old_names(state)
    assert "blocks.0.attn.qkv.weight" in legacy and "blocks.0.self_attn.q_proj.weight" not in legacy
    fresh = AudioTower(small())
    fresh.load_state_dict(legacy)  # strict: every old key is renamed, none is left over
    wrapped = torch.nn.ModuleDict({"audio_tower": AudioTower(small())})  # nested, as in MIMOModel
    wrapped.load_state_dict({f"audio_tower.{k}": v for k, v in legacy.items()})
    waves = torch.randn(2, SR) * 0.1
    with torch.no_grad():
        assert torch.equal(fresh(waves), tower(waves))
        assert torch.equal(wrapped["audio_tower"](waves), tower(waves))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_whisper_weights_map_onto_our_tower_by_renaming(tiny_whisper):
    """A Whisper encoder's weights, renamed (layers. -> blocks., conv -> embed.conv), give the same states."""
    model, _ = tiny_whisper
    encoder = model.get_encoder()
    config = AudioTowerConfig(clip_duration_s=1.2, hidden_size=32, num_layers=2, num_attention_heads=4,
                              ffn_hidden_size=64, audio_seq_len=30)  # 120 frames: Whisper's whole window here
    ours = AudioTower(config)
    renamed = {}
    for name, value in encoder.state_dict().items():
        if name == "embed_positions.weight":
            continue  # fixed sinusoids: ours are computed (the same table, checked above)
        name = "embed." + name if name.startswith("conv") else name
        name = "norm." + name.removeprefix("layer_norm.") if name.startswith("layer_norm.") else name
        renamed[name.replace("layers.", "blocks.", 1)] = value
    for i in range(config.num_layers):
        renamed[f"blocks.{i}.self_attn.k_proj.bias"] = torch.zeros(32)  # Whisper's keys have no bias
    missing, unexpected = ours.load_state_dict(renamed, strict=False)
    assert not unexpected and all(name.startswith("output_norm.") for name in missing)
    features = torch.randn(2, 80, 120)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_features(features), encoder(input_features=features).last_hidden_state)


def test_an_attention_window_keeps_each_half_second_to_itself():
    """``attention_window_s=0.5`` (the toy preset): changing the second half of a clip leaves the first
    half's audio tokens bit for bit unchanged; over the whole clip (None) every token hears both halves."""
    from mimo_lib.audio_tower import attention_windows
    from mimo_lib.config import ConfigError

    small = dict(hidden_size=32, num_layers=2, num_attention_heads=2, ffn_hidden_size=64)
    assert get_preset("toy").audio.attention_window_s == 0.5
    assert attention_windows(AudioTowerConfig(**small)) is None
    assert attention_windows(AudioTowerConfig(**small, attention_window_s=0.5)).tolist() == [0] * 25 + [1] * 25
    beats = attention_windows(AudioTowerConfig(backbone_type="beats", attention_window_s=0.5))
    assert beats.tolist() == [0] * 32 + [1] * 24  # 160-ms time patches of 8 frequency patches: 0-0.48 s, then on
    torch.manual_seed(0)
    clip = 0.1 * torch.randn(2, 16_000)
    second_half_changed = clip.clone()
    second_half_changed[:, 9_000:] = 0.0  # from 0.5625 s: past the stem's reach into the first window
    for window, first_half_moves in ((0.5, False), (None, True)):
        torch.manual_seed(0)
        tower = AudioTower(AudioTowerConfig(**small, attention_window_s=window)).eval()
        with torch.no_grad():
            before, after = tower(clip), tower(second_half_changed)  # (2, 25, 32)
        assert (not torch.equal(before[:, :12], after[:, :12])) == first_half_moves, window
        assert not torch.equal(before[:, 13:], after[:, 13:])
    for bad in (0, -1.0, True):
        with pytest.raises(ConfigError, match="attention_window_s"):
            AudioTowerConfig(attention_window_s=bad)
    with pytest.raises(ConfigError, match="hf-whisper"):
        AudioTowerConfig(backbone_type="hf-whisper", attention_window_s=0.5)
