"""Audio wire format, resampling and file decoding, including hostile miner payloads."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest
import soundfile as sf

from evaluation.audio import decode_audio_bytes, decode_npy_b64, encode_npy_b64, resample

BIG = 10**8


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_with_header(header: str, data: bytes = b"") -> bytes:
    """A hand-made version 1.0 npy: lets a test declare any shape or dtype it likes."""
    padded = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded.encode("latin1") + data


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_round_trip_is_float32_and_exact_for_float32(dtype: type) -> None:
    audio = np.sin(np.linspace(0, 50, 16_000)).astype(dtype)
    decoded = decode_npy_b64(encode_npy_b64(audio), max_bytes=BIG, max_samples=BIG)
    assert decoded.dtype == np.float32
    assert decoded.shape == audio.shape
    np.testing.assert_array_equal(decoded, audio.astype(np.float32))


def test_decode_accepts_float64_and_big_endian_payloads() -> None:
    audio = np.linspace(-1, 1, 101)
    for array in (audio, audio.astype(">f4"), audio.astype(">f8")):
        decoded = decode_npy_b64(_b64(_npy(array)), max_bytes=BIG, max_samples=BIG)
        np.testing.assert_allclose(decoded, audio, atol=1e-7)


def test_encode_writes_exactly_what_np_save_writes() -> None:
    # The encoder builds the .npy bytes itself (fewer copies); miners read them with np.load.
    base = np.sin(np.linspace(0, 50, 1001))
    for audio in (base, base.astype(np.float32), base.astype(">f4"), base[::3], base[:0], [0.5, -0.25]):
        expected = io.BytesIO()
        np.save(expected, np.ascontiguousarray(np.asarray(audio, dtype=np.float32)), allow_pickle=False)
        assert encode_npy_b64(audio) == base64.b64encode(expected.getvalue()).decode("ascii")


def test_encode_refuses_2d() -> None:
    with pytest.raises(ValueError, match="1-D"):
        encode_npy_b64(np.zeros((2, 10), dtype=np.float32))


# --- hostile payloads --------------------------------------------------------------------------------


def test_pickled_object_array_is_refused() -> None:
    payload = _b64(_npy(np.array([{"x": 1}, None], dtype=object), allow_pickle=True))
    with pytest.raises(ValueError, match="pickle"):
        decode_npy_b64(payload, max_bytes=BIG, max_samples=BIG)


def test_huge_declared_shape_is_refused_before_reading() -> None:
    # Declares ~8 TB of float64 while carrying 8 bytes: must fail on the header, not on allocation.
    raw = _npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", b"\0" * 8)
    with pytest.raises(ValueError, match="too long"):
        decode_npy_b64(_b64(raw), max_bytes=BIG, max_samples=16_000 * 600)


def test_declared_length_must_match_data() -> None:
    raw = _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }", b"\0" * 40)
    with pytest.raises(ValueError, match="header declares"):
        decode_npy_b64(_b64(raw), max_bytes=BIG, max_samples=BIG)


def test_trailing_garbage_is_refused() -> None:
    raw = _npy(np.zeros(10, dtype=np.float32)) + b"extra"
    with pytest.raises(ValueError, match="header declares"):
        decode_npy_b64(_b64(raw), max_bytes=BIG, max_samples=BIG)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    audio = np.zeros(100, dtype=np.float32)
    audio[37] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        decode_npy_b64(_b64(_npy(audio)), max_bytes=BIG, max_samples=BIG)


def test_float64_beyond_float32_range_is_refused() -> None:
    audio = np.array([0.0, 1e300])
    with pytest.raises(ValueError, match="NaN or infinite"):
        decode_npy_b64(_b64(_npy(audio)), max_bytes=BIG, max_samples=BIG)


def test_two_dimensional_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        decode_npy_b64(_b64(_npy(np.zeros((2, 8), dtype=np.float32))), max_bytes=BIG, max_samples=BIG)


def test_zero_dimensional_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        decode_npy_b64(_b64(_npy(np.float32(0.5))), max_bytes=BIG, max_samples=BIG)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(10, dtype=np.int16),
        np.arange(10, dtype=np.int64),
        np.zeros(10, dtype=np.complex64),
        np.zeros(10, dtype=bool),
        np.array(["a", "b"]),
        np.zeros(3, dtype=[("a", "<f4"), ("b", "<f4")]),
    ],
)
def test_non_float_dtypes_are_refused(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="dtype"):
        decode_npy_b64(_b64(_npy(array)), max_bytes=BIG, max_samples=BIG)


def test_empty_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        decode_npy_b64(_b64(_npy(np.zeros(0, dtype=np.float32))), max_bytes=BIG, max_samples=BIG)


@pytest.mark.parametrize(
    "payload",
    ["not base64!!", "QUJD\nREVG", "QUJDRA", "éèà", "AAAA" * 3],
    ids=["symbols", "newline", "unpadded", "non-ascii", "not-npy"],
)
def test_invalid_base64_or_not_npy_is_refused(payload: str) -> None:
    with pytest.raises(ValueError, match=r"base64|npy"):
        decode_npy_b64(payload, max_bytes=BIG, max_samples=BIG)


def test_non_string_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        decode_npy_b64(b"AAAA", max_bytes=BIG, max_samples=BIG)  # type: ignore[arg-type]


def test_byte_cap_is_checked_on_the_text_before_decoding() -> None:
    # Invalid base64 far past the cap: the size message proves decoding never started.
    with pytest.raises(ValueError, match="too large"):
        decode_npy_b64("!" * 10_000, max_bytes=1_000, max_samples=BIG)


def test_byte_cap_boundary() -> None:
    raw = _npy(np.zeros(100, dtype=np.float32))
    assert decode_npy_b64(_b64(raw), max_bytes=len(raw), max_samples=BIG).shape == (100,)
    with pytest.raises(ValueError, match="too large"):
        decode_npy_b64(_b64(raw), max_bytes=len(raw) - 1, max_samples=BIG)


def test_sample_cap_boundary() -> None:
    payload = encode_npy_b64(np.zeros(100, dtype=np.float32))
    assert decode_npy_b64(payload, max_bytes=BIG, max_samples=100).shape == (100,)
    with pytest.raises(ValueError, match="too long"):
        decode_npy_b64(payload, max_bytes=BIG, max_samples=99)


def test_truncated_header_is_refused() -> None:
    raw = _npy(np.zeros(10, dtype=np.float32))[:20]
    with pytest.raises(ValueError, match="npy"):
        decode_npy_b64(_b64(raw), max_bytes=BIG, max_samples=BIG)


# --- resampling --------------------------------------------------------------------------------------


def _tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


@pytest.mark.parametrize(
    ("orig", "target"), [(22_050, 16_000), (44_100, 16_000), (8_000, 16_000), (48_000, 24_000)]
)
def test_resample_preserves_an_in_band_tone(orig: int, target: int) -> None:
    out = resample(_tone(1_000, orig), orig, target)
    assert out.dtype == np.float32
    assert len(out) == int(np.ceil(orig * target / orig))
    expected = _tone(1_000, target)[: len(out)]
    middle = slice(500, -500)  # the edges see the implicit zeros beyond the signal
    assert np.max(np.abs(out[middle] - expected[middle])) < 1e-3


def test_resample_removes_what_would_alias() -> None:
    # 10 kHz does not exist at 16 kHz (Nyquist 8 kHz): it must vanish, not fold to 6 kHz.
    out = resample(_tone(10_000, 44_100), 44_100, 16_000)
    rms = float(np.sqrt(np.mean(out[500:-500] ** 2)))
    assert 20 * np.log10(rms / np.sqrt(0.5)) < -60


def test_resample_identity_and_length_rounding() -> None:
    audio = np.random.default_rng(0).standard_normal(1001)
    same = resample(audio, 16_000, 16_000)
    assert same.dtype == np.float32
    np.testing.assert_allclose(same, audio.astype(np.float32))
    assert len(resample(audio, 22_050, 16_000)) == int(np.ceil(1001 * 16_000 / 22_050))
    assert resample(np.zeros(0), 22_050, 16_000).shape == (0,)


def test_resample_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 5)), 16_000, 8_000)
    with pytest.raises(ValueError, match="orig_sr"):
        resample(np.zeros(5), 0, 8_000)
    with pytest.raises(ValueError, match="target_sr"):
        resample(np.zeros(5), 16_000, 10**7)


# --- decoding audio files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_decode_audio_bytes_mixes_to_mono(fmt: str, subtype: str) -> None:
    left = 0.5 * _tone(440, 16_000, 0.5)
    stereo = np.stack([left, left], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, stereo, 16_000, format=fmt, subtype=subtype)
    audio, sr = decode_audio_bytes(buffer.getvalue())
    assert sr == 16_000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - len(left)) < 2_000
    assert 0.3 < float(np.max(np.abs(audio))) < 0.6


def test_decode_audio_bytes_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        decode_audio_bytes(b"definitely not audio")
