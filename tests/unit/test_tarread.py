"""The strict tar reader (modelship.oci.tarread), a security boundary: model layers come from registries.

Tars are built here block by block, not with ``tarfile``, so that each header can carry exactly the trick under
test (a pax path override, a GNU long name, a base-256 size, a wrong checksum). Every refusal must be an
IntegrityError naming where the layer came from and the entry; nothing is yielded for a refused entry.
"""

from __future__ import annotations

import pytest

from modelship.errors import IntegrityError
from modelship.oci.tarread import BLOCK, Entry, entries, skip_padding

WHERE = "oci://reg/team/iris:1.0.0: layer sha256:0123…"


class Stream:
    """An in-memory TarStream: ``read_exact`` fails short of ``n`` bytes, as a layer's stream does."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.size = data, 0, len(data)

    def read_exact(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) < n:
            raise IntegrityError(f"{WHERE} ends inside a tar entry (at byte {self.pos + len(chunk)})")
        self.pos += n
        return chunk


def _octal(n: int, width: int) -> bytes:
    return f"{n:0{width - 1}o}".encode() + b"\0"


def header(
    name: str | bytes,
    size: int = 0,
    kind: bytes = b"0",
    *,
    link: str = "",
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
    size_field: bytes | None = None,
    checksum: int | None = None,
) -> bytes:
    """One 512-byte tar header; ``size_field``/``checksum`` replace the honest values."""
    raw = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[0 : len(raw)] = raw
    block[100:108] = _octal(0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = size_field if size_field is not None else _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157 : 157 + len(link)] = link.encode()
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    total = sum(block) if checksum is None else checksum
    block[148:156] = f"{total:06o}".encode() + b"\0 "
    return bytes(block)


def body(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def member(name: str, data: bytes = b"", kind: bytes = b"0", **kw) -> bytes:
    return header(name, len(data), kind, **kw) + body(data)


def pax(records: dict[str, str], kind: bytes = b"x") -> bytes:
    """A pax extended header (``x``: for the next entry; ``g``: global) holding ``records``."""
    data = b""
    for key, value in records.items():
        rec = f" {key}={value}\n".encode()
        n = len(rec) + 1
        n = len(str(n).encode()) + len(rec)  # the length counts its own digits
        data += str(n).encode() + rec
    return header("PaxHeader", len(data), kind) + body(data)


END = b"\0" * (2 * BLOCK)


def read(tar: bytes) -> list[tuple[Entry, bytes]]:
    """Every entry with its bytes, read the way the layer job reads them (bytes, then padding)."""
    stream, out = Stream(tar), []
    for e in entries(stream, WHERE):
        data = stream.read_exact(e.size) if e.kind == "file" else b""
        if e.kind == "file":
            skip_padding(stream, e.size)
        out.append((e, data))
    return out


def refused(tar: bytes, *words: str) -> str:
    with pytest.raises(IntegrityError) as info:
        read(tar)
    msg = str(info.value)
    assert msg.startswith(WHERE), msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ what is accepted


def test_plain_files_and_folders_come_out_in_order_with_their_bytes():
    tar = member("opt/m/", kind=b"5") + member("./opt/m/w.bin", b"w" * 700) + member("opt/m/e.txt") + END
    got = read(tar)
    assert [(e.name, e.kind, e.size) for e, _ in got] == [
        ("opt/m", "dir", 0),
        ("opt/m/w.bin", "file", 700),
        ("opt/m/e.txt", "file", 0),
    ]
    assert got[1][1] == b"w" * 700


def test_gnu_headers_ustar_prefixes_long_names_and_base256_sizes_are_read():
    long = "opt/m/" + "d" * 120 + "/w.bin"
    base256 = b"\x80" + (5).to_bytes(11, "big")  # GNU's encoding for sizes over 8 GiB, here a small one
    tar = (
        member("opt/m/gnu.bin", b"g", magic=b"ustar  \0")
        + member("w.bin", b"p", prefix=b"opt/m/sub")
        + header("././@LongLink", len(long) + 1, b"L", magic=b"ustar  \0")
        + body(long.encode() + b"\0")
        + member("trunc", b"l", magic=b"ustar  \0")
        + header("opt/m/big.bin", 5, size_field=base256)
        + body(b"12345")
        + pax({"path": "opt/m/pax-named.bin"})
        + member("ignored-name", b"x")
        + END
    )
    assert [(e.name, d) for e, d in read(tar)] == [
        ("opt/m/gnu.bin", b"g"),
        ("opt/m/sub/w.bin", b"p"),
        (long, b"l"),
        ("opt/m/big.bin", b"12345"),
        ("opt/m/pax-named.bin", b"x"),
    ]


def test_a_pax_header_applies_to_the_next_entry_only_and_a_global_one_changes_nothing():
    tar = (
        pax({"path": "opt/m/renamed.bin"})
        + member("opt/m/a.bin", b"a")
        + member("opt/m/b.bin", b"b")
        + pax({"path": "/etc/passwd"}, kind=b"g")  # a global header: modelship reads no field of it
        + member("opt/m/c.bin", b"c")
        + END
    )
    assert [e.name for e, _ in read(tar)] == ["opt/m/renamed.bin", "opt/m/b.bin", "opt/m/c.bin"]


def test_duplicate_names_are_each_reported_never_merged_or_dropped():
    """The reader yields every entry; the layer job refuses a path seen twice (integration:
    test_modelimage_store's hostile layers). Here: the second copy is not hidden from it."""
    tar = member("opt/m/w.bin", b"first") + member("opt/m/w.bin", b"second") + END
    assert [(e.name, d) for e, d in read(tar)] == [("opt/m/w.bin", b"first"), ("opt/m/w.bin", b"second")]


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name",
    ["../escape", "opt/m/../../etc/passwd", "opt/m/..", "../", "./../x"],
)
def test_a_path_with_dotdot_is_refused(name):
    refused(member(name, b"x") + END, "a path with '..'", repr(name))


@pytest.mark.parametrize("name", ["/etc/passwd", "//etc/cron.d/evil", "/"])
def test_an_absolute_path_is_refused(name):
    refused(member(name, b"x") + END, "an absolute path")


@pytest.mark.parametrize("name", ["opt//m", "opt/./m", "opt\\..\\..\\x", ".", "./", "./."])
def test_a_name_that_is_not_a_plain_relative_path_is_refused(name):
    refused(member(name, b"x") + END, "not a plain relative path")


def test_an_overlay_whiteout_is_refused():
    refused(member("opt/m/.wh.w.bin") + END, "overlay whiteout")
    refused(member("opt/m/.wh..wh..opq") + END, "overlay whiteout")


def test_a_name_that_is_not_utf8_is_refused():
    refused(header(b"opt/m/\xff\xfe.bin", 0) + END, "not UTF-8")


@pytest.mark.parametrize(
    ("how", "tar"),
    [
        ("pax path", pax({"path": "../../etc/passwd"}) + member("opt/m/ok.bin", b"x")),
        ("pax absolute path", pax({"path": "/etc/passwd"}) + member("opt/m/ok.bin", b"x")),
        ("GNU long name", header("././@LongLink", 17, b"L", magic=b"ustar  \0") + body(b"../../etc/passwd\0")),
        ("ustar prefix", member("passwd", b"x", prefix=b"../../etc")),
    ],
)
def test_a_name_smuggled_past_the_name_field_is_checked_the_same(how, tar):
    """The name that counts is the one a real extractor would use: pax ``path``, GNU long name, ustar prefix."""
    if how == "GNU long name":
        tar += member("opt/m/ok.bin", b"x", magic=b"ustar  \0")
    msg = refused(tar + END, "etc/passwd")
    assert "'..'" in msg or "absolute" in msg


# ------------------------------------------------------------------------------------------ entry types


@pytest.mark.parametrize(
    ("kind", "what"),
    [(b"2", "a symbolic link"), (b"1", "a hard link"), (b"K", "a symbolic link")],
    ids=["symlink", "hardlink", "gnu-longlink"],
)
def test_links_are_refused_naming_their_target(kind, what):
    msg = refused(header("opt/m/w.bin", 0, kind, link="/etc/shadow") + END, what, "opt/m/w.bin")
    assert "/etc/shadow" in msg


def test_a_link_is_refused_before_any_later_entry_is_read():
    tar = header("opt/m/x", 0, b"2", link="../../../../root") + member("opt/m/x/authorized_keys", b"k") + END
    names: list[str] = []

    def walk() -> None:
        names.extend(e.name for e in entries(Stream(tar), WHERE))

    with pytest.raises(IntegrityError, match="symbolic link"):
        walk()
    assert names == []


@pytest.mark.parametrize("kind", [b"3", b"4", b"6"], ids=["char-device", "block-device", "fifo"])
def test_devices_and_fifos_are_refused(kind):
    refused(header("opt/m/dev", 0, kind) + END, "a device or fifo", "opt/m/dev")


@pytest.mark.parametrize("kind", [b"S", b"D", b"V", b"M", b"N", b"Z"])
def test_any_other_entry_type_is_refused(kind):
    refused(header("opt/m/odd", 0, kind) + END, "of tar type", repr(kind))


# ------------------------------------------------------------------------------------------ sizes and headers


def test_a_file_larger_than_what_the_layer_has_left_is_refused_before_it_is_read():
    refused(header("opt/m/w.bin", 10_000) + body(b"short") + END, "10000 bytes", "more than the layer has left")


def test_a_pax_size_override_is_checked_like_the_header_size():
    refused(pax({"size": "99999999"}) + member("opt/m/w.bin", b"x") + END, "more than the layer has left")
    refused(pax({"size": "-1"}) + member("opt/m/w.bin", b"x") + END, "pax size that is not a number")
    refused(pax({"size": "0x10"}) + member("opt/m/w.bin", b"x") + END, "pax size that is not a number")


def test_a_pax_size_override_wins_over_the_header():
    data = b"y" * 600
    tar = pax({"size": "600"}) + header("opt/m/w.bin", 0) + body(data) + END
    assert [(e.name, d) for e, d in read(tar)] == [("opt/m/w.bin", data)]


@pytest.mark.parametrize(
    "record",
    [b"999 path=x\n", b"5 path=opt/m/x\n", b"abc path=x\n", b"12 pathx\n\n\n\n", b"0 \n"],
    ids=["length-past-end", "length-short", "length-not-a-number", "no-equals", "zero"],
)
def test_a_malformed_pax_header_is_refused(record):
    refused(header("PaxHeader", len(record), b"x") + body(record) + member("opt/m/w.bin") + END, "pax header")


def test_an_oversized_extended_header_is_refused_without_reading_it():
    tar = header("PaxHeader", 64 * 1024 + 1, b"x") + END  # the bytes are not even there
    refused(tar, "extended tar header of 65537 bytes")
    refused(header("././@LongLink", 10**9, b"L", magic=b"ustar  \0") + END, "extended tar header")


def test_a_folder_with_a_size_is_refused():
    refused(header("opt/m/", 512, b"5") + body(b"d" * 512) + END, "has a size")


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (b"0000000001x\0", "size that is not a number"),
        (b"\xff" * 12, "negative size"),
        (b"-0000000001\0", "size that is not a number"),
    ],
    ids=["not-octal", "negative-base256", "minus-sign"],
)
def test_a_size_field_that_is_not_a_size_is_refused(field, words):
    refused(header("opt/m/w.bin", size_field=field) + END, words)


def test_a_wrong_checksum_is_refused():
    good = header("opt/m/w.bin", 1)
    refused(
        header("opt/m/w.bin", 1, checksum=sum(good[:148]) + 256 + sum(good[156:]) + 1) + body(b"x") + END, "checksum"
    )


def test_a_header_that_is_neither_ustar_nor_gnu_is_refused():
    refused(member("opt/m/w.bin", b"x", magic=b"\0" * 8) + END, "neither POSIX ustar nor GNU tar")


def test_a_layer_that_ends_without_the_end_of_archive_blocks_is_refused():
    refused(member("opt/m/w.bin", b"x"), "ends without the tar end-of-archive blocks")


def test_a_layer_cut_inside_a_header_is_refused():
    refused(member("opt/m/w.bin", b"x") + b"\1" * 100, "ends inside a tar entry")
