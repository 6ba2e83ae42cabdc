"""R lazy-load data (.rdx index + .rdb database) read without R.

An R package's data/Rdata.rdx is a compressed serialized R list naming each object and its
(offset, length) in Rdata.rdb; each .rdb record is itself a compressed serialized object.
Only the parts of R's XDR serialization format that data frames of text use are decoded:
vectors, pairlists (attributes), symbols and references.
"""
import bz2
import gzip
import lzma
import struct
import zlib

# SEXP type codes (R internals, "Serialization Formats").
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 0, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP, NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 242, 241, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP = 251, 247
NA_INT = -2147483648


class RObject:
    """An R vector with its attributes (names, class, levels...)."""

    def __init__(self, rtype, value, attributes):
        self.rtype, self.value, self.attributes = rtype, value, attributes

    def __repr__(self):
        return f"RObject({self.rtype}, {len(self.value)} items, attrs={list(self.attributes)})"


class _Reader:
    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated R serialization")
        self.pos += n
        return chunk

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def header(self):
        if self.take(2) != b"X\n":
            raise ValueError("not an XDR R serialization")
        version = self.int()
        self.int(), self.int()  # writer and minimal reader R versions
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"R serialization version {version} not supported")

    def item(self):
        flags = self.int()
        sexptype = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if sexptype in (NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP,
                        UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP):
            return None
        if sexptype == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if sexptype == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if sexptype == LISTSXP:
            return self.pairlist(has_attr, has_tag)
        if sexptype == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", errors="replace")
        if sexptype in (LGLSXP, INTSXP):
            n = self.int()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif sexptype == REALSXP:
            n = self.int()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif sexptype in (STRSXP, VECSXP):
            value = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"R object type {sexptype} not supported")
        attributes = self.attributes() if has_attr else {}
        return RObject(sexptype, value, attributes)

    def pairlist(self, has_attr, has_tag):
        # A pairlist is a chain of (attributes?, tag?, car, cdr) cells ending with NILVALUE.
        out = {}
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out[tag if tag is not None else len(out)] = self.item()
            flags = self.int()
            if flags & 0xFF != LISTSXP:
                if flags & 0xFF != NILVALUE_SXP:
                    raise ValueError("unexpected pairlist tail")
                return out
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def attributes(self):
        flags = self.int()
        if flags & 0xFF != LISTSXP:
            raise ValueError("attributes are not a pairlist")
        return self.pairlist(bool(flags & (1 << 9)), bool(flags & (1 << 10)))


def unserialize(data):
    """Decodes one R object from XDR serialization bytes."""
    reader = _Reader(data)
    reader.header()
    return reader.item()


def decompress(record):
    """Decodes a lazy-load record: 4-byte big-endian length, then zlib, or a type byte
    ('2' bzip2, 'Z' xz, '0' none) and the payload."""
    length = struct.unpack(">I", record[:4])[0]
    kind = record[4:5]
    if kind == b"Z":
        out = lzma.decompress(record[5:])
    elif kind == b"2":
        out = bz2.decompress(record[5:])
    elif kind == b"0":
        out = record[5:]
    else:
        out = zlib.decompress(record[4:])
    if len(out) != length:
        raise ValueError("lazy-load record has the wrong length")
    return out


def load_lazy_data(rdx_path):
    """Returns {name: RObject} for every object in an R lazy-load database (path of the .rdx;
    the .rdb beside it holds the records)."""
    with open(rdx_path, "rb") as f:
        raw = f.read()
    # Recent R writes the index as a gzipped .rds file, older R as a lazy-load record.
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else decompress(raw))
    names = index.value[0]  # $variables: a named list of (offset, length) pairs
    with open(rdx_path[:-4] + ".rdb", "rb") as f:
        db = f.read()
    out = {}
    for name, pos in zip(names.attributes["names"].value, names.value):
        offset, length = (int(x) for x in pos.value)
        out[name] = unserialize(decompress(db[offset:offset + length]))
    return out
