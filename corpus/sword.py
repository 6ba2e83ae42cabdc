"""SWORD zText Bible modules (Debian sword-text-*), read without libsword.

A zText module holds, per testament (ot, nt):
  .bzs  block index: (offset, compressed size, uncompressed size), 3 x uint32 LE per block
  .bzz  the blocks, each zlib-compressed
  .bzv  verse index: (block, offset in the uncompressed block, size), uint32, uint32, uint16 LE
Entries are in canonical verse order (module/testament/book/chapter headings included), so
joining them gives the whole text; OSIS <div type="book" osisID=...> tags mark where each
book starts.
"""
import pathlib
import re
import struct
import zlib

from .common import unescape

BLOCK = struct.Struct("<III")
VERSE = struct.Struct("<IIH")


def read_entries(folder, testament):
    """Returns the OSIS text of every verse-index entry of one testament, in order."""
    folder = pathlib.Path(folder)
    bzs = (folder / f"{testament}.bzs").read_bytes()
    bzz = (folder / f"{testament}.bzz").read_bytes()
    bzv = (folder / f"{testament}.bzv").read_bytes()
    blocks = [BLOCK.unpack_from(bzs, i) for i in range(0, len(bzs) - BLOCK.size + 1, BLOCK.size)]
    cache = {}
    out = []
    for i in range(0, len(bzv) - VERSE.size + 1, VERSE.size):
        block, start, size = VERSE.unpack_from(bzv, i)
        if size == 0:
            continue
        if block not in cache:
            offset, csize, usize = blocks[block]
            data = zlib.decompress(bzz[offset:offset + csize])
            if len(data) != usize:
                raise ValueError(f"{folder}: block {block} has the wrong size")
            cache = {block: data}  # blocks are read in order: keep only the current one
        out.append(cache[block][start:start + size].decode("utf-8", errors="replace"))
    return out


BOOK_TAG = re.compile(r'<div\b[^>]*\btype="book"[^>]*>')
CHAPTER_TAG = re.compile(r'<chapter\b[^>]*\bsID="[^"]*"[^>]*>')
OSIS_ID = re.compile(r'\bosisID="([^".]+)')


def split_books(osis):
    """Splits a testament's OSIS stream into books: [(osisID, osis text)]. A book starts at
    its opening <div type="book"> or, where a module lacks that div (the WEB's Hosea), at its
    first chapter. Text before the first book (module headings, a preface) is dropped."""
    marks = []
    for tag in (BOOK_TAG, CHAPTER_TAG):
        for m in tag.finditer(osis):
            osis_id = OSIS_ID.search(m.group(0))
            if osis_id and "eID=" not in m.group(0):  # closing tags may repeat the osisID
                marks.append((m.start(), osis_id.group(1)))
    marks.sort()
    starts = []
    for pos, book in marks:
        if not starts or starts[-1][1] != book:
            starts.append((pos, book))
    books = []
    for i, (pos, book) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(osis)
        books.append((book, osis[pos:end]))
    return books


def osis_to_text(osis):
    """Plain text of OSIS markup: notes (footnotes, cross references) dropped, titles and
    paragraphs on their own lines, chapters separated by an empty line, words kept."""
    # A note often stands where the space between two words was ("God<note/>created").
    s = re.sub(r"<note\b.*?</note>", "\x00", osis, flags=re.S)
    s = re.sub(r"<chapter\b[^>]*\bsID=[^>]*>", "\n\n", s)
    s = re.sub(r"<title\b[^>]*>", "\n\n", s)
    s = re.sub(r"</title>", "\n", s)
    s = re.sub(r'<div\b[^>]*type="x-p"[^>]*\bsID=[^>]*>|<div\b[^>]*\bsID=[^>]*type="x-p"[^>]*>', "\n", s)
    s = re.sub(r"<lb\b[^>]*>|<l\b[^>]*eID[^>]*>|</l>|<p\b[^>]*>|</p>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"(?<=\w)\x00(?=\w)", " ", s).replace("\x00", "")
    s = unescape(s)
    s = re.sub(r"[ \t]+", " ", s)
    return re.sub(r" *\n *", "\n", s)


def read_module(folder):
    """[(osisID, plain text)] for every book of the module, in canonical order."""
    books = []
    for testament in ("ot", "nt"):
        if (pathlib.Path(folder) / f"{testament}.bzv").exists():
            osis = " ".join(read_entries(folder, testament))
            books += [(osis_id, osis_to_text(text)) for osis_id, text in split_books(osis)]
    return books
