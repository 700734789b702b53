"""Audio helpers: the miner wire format (base64 ``.npy``), resampling, and decoding encoded files.

The wire format is the one the miner guide prescribes: a 1-D float array saved with ``np.save`` and
base64-encoded. Decoding is the validator's attack surface (a miner controls the bytes), so
:func:`decode_npy_b64` checks sizes before it allocates anything, reads the ``.npy`` header itself before
trusting it, and never unpickles.
"""

from __future__ import annotations

import base64
import binascii
import io
import math

import numpy as np
import soundfile as sf

try:
    # A SIMD base64 encoder (a dependency; the stdlib fallback keeps a bare install working): ten times
    # the stdlib's speed, the same bytes. Base64 is the biggest CPU cost the validator pays per request
    # (1 ms per 10 s clip with the stdlib).
    from pybase64 import b64encode as _b64encode
except ImportError:
    from base64 import b64encode as _b64encode

# Lobes of the windowed sinc on each side of the output sample. 32 keeps the passband flat to ~95% of
# Nyquist with stopband attenuation well past 80 dB, at about 2 * 32 / cutoff taps per output sample.
_SINC_ZERO_CROSSINGS = 32
# Fraction of the (lower) Nyquist frequency that the anti-aliasing filter lets through: leaves room for
# the transition band so that nothing above the new Nyquist folds back.
_SINC_ROLLOFF = 0.945
# Kaiser window shape: beta ~ 9 trades a slightly wider transition for ~90 dB side lobes.
_KAISER_BETA = 9.0
# Output samples computed per vectorised block: bounds the temporary (block x taps) matrices to a few MB.
_RESAMPLE_BLOCK = 4096
# The sample rates the resampler accepts; anything outside is a caller bug, not audio.
_MIN_SAMPLE_RATE = 1_000
_MAX_SAMPLE_RATE = 384_000
# npy headers are tiny; numpy itself refuses headers above 10 kB.
_MAX_NPY_HEADER = 10_000


def encode_npy_b64(audio: np.ndarray) -> str:
    """Encode a 1-D signal as the miner API expects: float32 ``.npy`` bytes, base64 text.

    Raises ValueError when ``audio`` is not one-dimensional.
    """
    return encode_npy_b64_bytes(audio).decode("ascii")


def encode_npy_b64_bytes(audio: np.ndarray) -> bytes:
    """:func:`encode_npy_b64` as ASCII bytes, for a request body built without a round trip through str."""
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {array.shape}")
    array = np.ascontiguousarray(array)
    # Exactly np.save's bytes (a version 1.0 header, then the data) with one copy of the data instead of
    # three: this runs for every request, on megabytes.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    payload = bytearray(header.getbuffer())
    payload += array.data.cast("B")
    return _b64encode(payload)


def decode_npy_b64(data: str, *, max_bytes: int, max_samples: int) -> np.ndarray:
    """Decode untrusted base64 ``.npy`` audio into a finite 1-D float32 array.

    ``max_bytes`` caps the decoded ``.npy`` size and is checked on the base64 length before decoding;
    ``max_samples`` caps the declared length and is checked on the header before the data is read. The
    payload must be canonical base64 (no whitespace), a version 1 or 2 ``.npy`` of a 1-D, non-empty,
    floating point array whose data length matches its header exactly, with only finite values.
    Every violation raises ValueError with a message that names it.
    """
    if not isinstance(data, str):
        raise ValueError(f"audio_data must be a string, got {type(data).__name__}")
    max_b64_chars = 4 * math.ceil(max_bytes / 3)
    if len(data) > max_b64_chars:
        raise ValueError(f"audio_data too large: {len(data)} base64 chars > {max_b64_chars}")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("audio_data is not valid base64") from exc
    if len(raw) > max_bytes:
        raise ValueError(f"audio_data too large: {len(raw)} bytes > {max_bytes}")

    stream = io.BytesIO(raw)
    dtype, count = _read_npy_header(stream, max_samples=max_samples)
    offset = stream.tell()
    expected = count * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"npy data is {len(raw) - offset} bytes, header declares {expected}")

    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    with np.errstate(over="ignore"):
        # A float64 beyond float32's range becomes inf here and is rejected below with the rest.
        audio = array.astype(np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite values")
    return audio


def _read_npy_header(stream: io.BytesIO, *, max_samples: int) -> tuple[np.dtype, int]:
    """Read and check a ``.npy`` header; return its dtype and element count. Raises ValueError."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=_MAX_NPY_HEADER)
        else:
            # Version 3 exists only for non-latin-1 structured field names: never a float vector.
            raise ValueError(f"unsupported npy version {version}")
    except ValueError as exc:
        raise ValueError(f"not a valid npy payload: {exc}") from exc
    except (EOFError, OSError, SyntaxError, TypeError) as exc:
        raise ValueError(f"not a valid npy payload: {type(exc).__name__}") from exc

    if dtype.hasobject:
        raise ValueError("npy holds Python objects (pickle), refused")
    if dtype.kind != "f":
        raise ValueError(f"audio dtype must be floating point, got {dtype}")
    if len(shape) != 1:
        raise ValueError(f"audio must be 1-D, got shape {shape}")
    (count,) = shape
    if count == 0:
        raise ValueError("audio is empty")
    if count > max_samples:
        raise ValueError(f"audio too long: {count} samples > {max_samples}")
    return dtype, int(count)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D signal from ``orig_sr`` to ``target_sr`` Hz; returns float32.

    Method: band-limited interpolation with a Kaiser-windowed sinc (the approach of libsamplerate and
    resampy), numpy only. Each output sample at input position ``t`` is a weighted sum of the inputs
    within 32 sinc lobes of ``t``; the sinc's cutoff is 94.5% of the lower of the two Nyquist
    frequencies, so downsampling is anti-aliased and upsampling adds no images. Unlike FFT resampling it
    does not treat the signal as periodic (no wrap-around at the edges) and works for any pair of
    rates. The ratio is reduced to a fraction ``up/down`` so that the fractional positions repeat and
    the filter weights are computed once per distinct phase. Samples beyond the ends count as zero.
    The output has ``ceil(len(audio) * target_sr / orig_sr)`` samples.
    """
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if not isinstance(rate, int | np.integer) or not _MIN_SAMPLE_RATE <= rate <= _MAX_SAMPLE_RATE:
            raise ValueError(f"{name} must be an integer in [{_MIN_SAMPLE_RATE}, {_MAX_SAMPLE_RATE}]")
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if orig_sr == target_sr or signal.size == 0:
        return signal.astype(np.float32)

    divisor = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // divisor, int(orig_sr) // divisor
    cutoff = _SINC_ROLLOFF * min(1.0, up / down)  # in cycles per input sample, relative to Nyquist
    half_width = _SINC_ZERO_CROSSINGS / cutoff  # in input samples
    reach = math.ceil(half_width)
    offsets = np.arange(-reach + 1, reach + 1)  # taps relative to floor(t)

    n_in = signal.size
    n_out = math.ceil(n_in * up / down)
    # Zero padding makes every tap index valid without per-sample bounds checks.
    padded = np.concatenate([np.zeros(reach), signal, np.zeros(reach + 1)])
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _RESAMPLE_BLOCK):
        n = np.arange(start, min(start + _RESAMPLE_BLOCK, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)  # exact: t = base + phase / up
        phases, inverse = np.unique(phase, return_inverse=True)
        table = _sinc_weights(phases / up, offsets, cutoff, half_width)
        taps = padded[(base + reach)[:, None] + offsets[None, :]]
        out[n] = np.einsum("ij,ij->i", taps, table[inverse])
    return out


def _sinc_weights(fractions: np.ndarray, offsets: np.ndarray, cutoff: float, half_width: float) -> np.ndarray:
    """Kaiser-windowed sinc weights for each fractional position (rows) and tap offset (columns)."""
    distance = offsets[None, :] - fractions[:, None]  # tap position minus output position, in samples
    ratio = np.clip(distance / half_width, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio * ratio)) / np.i0(_KAISER_BETA)
    return cutoff * np.sinc(cutoff * distance) * window


def decode_audio_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an encoded audio file (WAV, FLAC, OGG, anything libsndfile reads) to mono float32.

    Channels are averaged. Returns ``(samples, sample_rate)``; raises ValueError when the bytes are not
    audio libsndfile can read or hold no samples.
    """
    try:
        frames, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot decode audio: {exc}") from exc
    if frames.shape[0] == 0:
        raise ValueError("audio file holds no samples")
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate)
