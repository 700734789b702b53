"""Real subtensor runtime metadata for the in-memory substrate, and one runtime derived from it.

``tests/data/integration_websocket_at_version.txt`` is a verbatim ``Metadata_metadata_at_version(15)``
response of finney (runtime spec 343, see ``tests/data/README.md``). bittensor 11.3.0's ``SetWeights``
reads four storage items that runtime does not have (``SubnetEpochConsensus``, ``LastEpochBlock``,
``PendingEpochAt``, ``SubnetEpochIndex``). So the tests run on two runtimes:

- :func:`published_runtime`: the published metadata exactly as served, without those items;
- :func:`current_runtime`: the same metadata with those four items added the way subtensor declares
  them (``StorageMap<Identity, NetUid, u64, ValueQuery>`` for the three epoch counters, and
  ``EpochConsensus {Yuma, Null}`` defaulting to ``Yuma``), every other byte unchanged.

The second is built by a small V15 walker below: it skips over the type registry (to append the one new
enum type at the end, where its id is the registry's length) and over the pallets (to append the storage
entries to ``SubtensorModule``). Both runtimes are then loaded by the SDK's own codec
(``bittensor_core``), which refuses malformed metadata.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from bittensor._transport.codec import RuntimeCodec, strip_option_opaque_metadata

DATA = Path(__file__).parent / "data" / "integration_websocket_at_version.txt"
SPEC_VERSION = 343
"""The runtime the published response came from (finney, November 2025)."""
TRANSACTION_VERSION = 1
CURRENT_SPEC_VERSION = 400
"""A later spec number for the derived runtime, so the two are never mistaken for each other."""

EPOCH_ITEMS = ("LastEpochBlock", "PendingEpochAt", "SubnetEpochIndex")
"""The u64 per-subnet epoch counters SetWeights reads under commit-reveal."""

_IDENTITY_HASHER = 6  # frame-metadata StorageHasher::Identity
_MODIFIER_DEFAULT = 1  # StorageEntryModifier::Default
_MAP = 1  # StorageEntryType::Map


# ---- SCALE primitives ------------------------------------------------------------------------------


def _compact(value: int) -> bytes:
    if value < 1 << 6:
        return bytes([value << 2])
    if value < 1 << 14:
        return ((value << 2) | 1).to_bytes(2, "little")
    if value < 1 << 30:
        return ((value << 2) | 2).to_bytes(4, "little")
    raw = value.to_bytes((value.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def _text(value: str) -> bytes:
    data = value.encode()
    return _compact(len(data)) + data


@dataclass
class _Reader:
    """A cursor over SCALE bytes that can skip the metadata structures this module needs to pass."""

    data: bytes
    at: int = 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1]

    def compact(self) -> int:
        first = self.data[self.at]
        mode = first & 3
        if mode == 3:
            size = (first >> 2) + 4
            value = int.from_bytes(self.data[self.at + 1 : self.at + 1 + size], "little")
            self.at += 1 + size
            return value
        size = {0: 1, 1: 2, 2: 4}[mode]
        value = int.from_bytes(self.data[self.at : self.at + size], "little") >> 2
        self.at += size
        return value

    def text(self) -> str:
        size = self.compact()
        self.at += size
        return self.data[self.at - size : self.at].decode()

    def skip(self, size: int) -> None:
        self.at += size

    def skip_bytes(self) -> None:
        """Skip a ``Vec<u8>`` (read its length first: ``at`` moves while it is read)."""
        size = self.compact()
        self.at += size

    def texts(self) -> None:
        for _ in range(self.compact()):
            self.text()

    def option(self, read: object) -> None:
        if self.byte():
            read()  # type: ignore[operator]

    def field(self) -> None:
        self.option(self.text)  # name
        self.compact()  # type id
        self.option(self.text)  # type name
        self.texts()  # docs

    def fields(self) -> None:
        for _ in range(self.compact()):
            self.field()

    def portable_type(self) -> None:
        self.compact()  # id
        self.texts()  # path
        for _ in range(self.compact()):  # type parameters
            self.text()
            self.option(self.compact)
        kind = self.byte()
        if kind == 0:  # composite
            self.fields()
        elif kind == 1:  # variant
            for _ in range(self.compact()):
                self.text()
                self.fields()
                self.byte()
                self.texts()
        elif kind in (2, 6):  # sequence, compact
            self.compact()
        elif kind == 3:  # array
            self.skip(4)
            self.compact()
        elif kind == 4:  # tuple
            for _ in range(self.compact()):
                self.compact()
        elif kind == 5:  # primitive
            self.byte()
        elif kind == 7:  # bit sequence
            self.compact()
            self.compact()
        else:
            raise ValueError(f"unknown TypeDef variant {kind} at byte {self.at}")
        self.texts()  # docs

    def storage_entry(self) -> str:
        name = self.text()
        self.byte()  # modifier
        if self.byte() == 0:  # plain
            self.compact()
        else:  # map
            self.skip_bytes()  # hashers, one byte each
            self.compact()
            self.compact()
        self.skip_bytes()  # default bytes
        self.texts()
        return name


# ---- the derived runtime ---------------------------------------------------------------------------


def _epoch_consensus_type(type_id: int) -> bytes:
    """``pallet_subtensor::epoch::EpochConsensus { Yuma = 0, Null = 1 }`` as a V15 portable type."""
    path = [_text(part) for part in ("pallet_subtensor", "epoch", "EpochConsensus")]
    variants = b"".join(
        _text(name) + _compact(0) + bytes([index]) + _compact(0) for index, name in ((0, "Yuma"), (1, "Null"))
    )
    return (
        _compact(type_id)
        + _compact(len(path))
        + b"".join(path)
        + _compact(0)  # no type parameters
        + bytes([1])  # TypeDef::Variant
        + _compact(2)
        + variants
        + _compact(0)  # docs
    )


def _map_entry(name: str, key_type: int, value_type: int, default: bytes) -> bytes:
    return (
        _text(name)
        + bytes([_MODIFIER_DEFAULT, _MAP])
        + _compact(1)
        + bytes([_IDENTITY_HASHER])
        + _compact(key_type)
        + _compact(value_type)
        + _compact(len(default))
        + default
        + _compact(0)
    )


def _type_id(codec: RuntimeCodec, pallet: str, item: str, part: str) -> int:
    entry = codec.storage_entry(pallet, item)
    text = entry.value_type if part == "value" else entry.param_types[0]
    return int(text.removeprefix("scale_info::"))


def with_epoch_items(metadata: bytes) -> bytes:
    """``metadata`` (V15, without the epoch items) with the four items SetWeights reads added."""
    if metadata[:5] != b"meta\x0f":
        raise ValueError("expected V15 metadata ('meta' + version 15)")
    published = RuntimeCodec(metadata, spec_version=SPEC_VERSION, transaction_version=TRANSACTION_VERSION)
    netuid_type = _type_id(published, "SubtensorModule", "Tempo", "key")
    u64_type = _type_id(published, "SubtensorModule", "WeightsVersionKey", "value")

    reader = _Reader(metadata, 5)
    count_at = reader.at
    count = reader.compact()
    types_start = reader.at
    for _ in range(count):
        reader.portable_type()
    types_end = reader.at
    consensus_type = count
    out = bytearray(metadata[:count_at])
    out += _compact(count + 1)
    out += metadata[types_start:types_end]
    out += _epoch_consensus_type(consensus_type)

    pallets = reader.compact()
    out += _compact(pallets)
    for _ in range(pallets):
        start = reader.at
        name = reader.text()
        if not reader.byte():  # a pallet without storage
            _skip_pallet_rest(reader)
            out += metadata[start : reader.at]
            continue
        reader.text()  # prefix
        entries_at = reader.at
        entries = reader.compact()
        if name != "SubtensorModule":
            for _ in range(entries):
                reader.storage_entry()
            _skip_pallet_rest(reader)
            out += metadata[start : reader.at]
            continue
        names = set()
        body_start = reader.at
        for _ in range(entries):
            names.add(reader.storage_entry())
        body_end = reader.at
        added = [
            _map_entry(item, netuid_type, u64_type, bytes(8)) for item in EPOCH_ITEMS if item not in names
        ]
        if "SubnetEpochConsensus" not in names:
            added.append(_map_entry("SubnetEpochConsensus", netuid_type, consensus_type, b"\x00"))
        out += metadata[start:entries_at] + _compact(entries + len(added))
        out += metadata[body_start:body_end] + b"".join(added)
        _skip_pallet_rest(reader)
        out += metadata[body_end : reader.at]
    out += metadata[reader.at :]
    return bytes(out)


def _skip_pallet_rest(reader: _Reader) -> None:
    """Skip what follows a pallet's storage: calls, event, constants, error, index, docs."""
    reader.option(reader.compact)  # calls
    reader.option(reader.compact)  # event
    for _ in range(reader.compact()):  # constants
        reader.text()
        reader.compact()
        reader.skip_bytes()
        reader.texts()
    reader.option(reader.compact)  # error
    reader.byte()  # index
    reader.texts()  # docs


# ---- the two runtimes ------------------------------------------------------------------------------


@functools.cache
def published_metadata() -> bytes:
    """The raw V15 metadata of spec 343, from the stored ``Option<OpaqueMetadata>`` response."""
    response = bytes.fromhex(DATA.read_text(encoding="ascii").strip().removeprefix("0x"))
    metadata = strip_option_opaque_metadata(response)
    if metadata is None:
        raise ValueError(f"{DATA} holds an empty metadata response")
    return metadata


@functools.cache
def current_metadata() -> bytes:
    """Spec 343's metadata with the epoch storage items bittensor 11.3.0 reads."""
    return with_epoch_items(published_metadata())


def published_runtime() -> RuntimeCodec:
    """The codec of the runtime exactly as published (no ``SubnetEpochConsensus``)."""
    return RuntimeCodec(
        published_metadata(), spec_version=SPEC_VERSION, transaction_version=TRANSACTION_VERSION
    )


def current_runtime() -> RuntimeCodec:
    """The codec of the runtime the SDK expects (the published one plus the epoch items)."""
    return RuntimeCodec(
        current_metadata(), spec_version=CURRENT_SPEC_VERSION, transaction_version=TRANSACTION_VERSION
    )
