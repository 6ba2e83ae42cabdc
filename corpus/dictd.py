"""dictd dictionaries (.index + .dict.dz, the latter gzip with random-access extras).

Each .index line is `headword TAB offset TAB length`, the numbers in dictd's base64 digits;
entries are the .dict bytes at those places. The database-info pseudo entries (00-database-*,
00databasealphabet...) are not dictionary text and are skipped.
"""
import gzip
import pathlib

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_number(s):
    n = 0
    for ch in s:
        n = n * 64 + B64.index(ch)
    return n


def read_entries(index_path, dict_path):
    """Entry texts in .dict order, each once (several headwords may share one entry)."""
    spans = set()
    for line in pathlib.Path(index_path).read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith("00-database") or fields[0].startswith("00database"):
            continue
        spans.add((b64_number(fields[1]), b64_number(fields[2])))
    raw = pathlib.Path(dict_path).read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return [data[o:o + n].decode("utf-8", errors="replace").strip("\n") for o, n in sorted(spans)]


def chunk(entries, max_bytes):
    """Groups entries into documents of about max_bytes, so the caps can take a part of a
    dictionary and the validation split can sample it."""
    chunks, current, size = [], [], 0
    for entry in entries:
        current.append(entry)
        size += len(entry.encode("utf-8")) + 2
        if size >= max_bytes:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        chunks.append("\n\n".join(current))
    return chunks
