"""What every extractor shares: the document record, text clean-up and file reading."""
import dataclasses
import gzip
import html
import pathlib
import re

TOKENS_PER_BYTE = 1 / 4.2  # the spec's estimate: tokens ~ bytes / 4.2


class CorpusError(Exception):
    """A missing source or an expected document not found: reported as one line, exit 2."""


@dataclasses.dataclass
class Doc:
    source: str  # output folder name, e.g. "sotu", "bible-kjv"
    name: str  # file stem inside it, unique per source
    text: str
    work: str = ""  # what the split rules match on (a Bible book, a play); "" = nothing
    order: int = 0  # position in its source (Bible canonical order)

    @property
    def bytes(self):
        return len(self.text.encode("utf-8"))


def tokens(nbytes):
    return nbytes * TOKENS_PER_BYTE


def read_text(path):
    """Reads a file as UTF-8 (gunzipping .gz/.dz); bad bytes become U+FFFD so every output
    is valid UTF-8 even where a package has a stray Latin-1 byte."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def normalize(text):
    """Plain-text normal form of every output: LF line ends, no BOM or control characters,
    no trailing blanks, at most one empty line in a row, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text + "\n" if text else ""


def slug(name):
    """A file-name-safe document name: lower case, [a-z0-9.-] only."""
    s = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    return s[:80].strip("-.") or "doc"


def unique_names(docs):
    """Makes document names unique within each source by appending -2, -3..."""
    seen = {}
    for doc in docs:
        key = (doc.source, doc.name)
        if key in seen:
            seen[key] += 1
            doc.name = f"{doc.name}-{seen[key]}"
        else:
            seen[key] = 1
    return docs


def strip_gutenberg(text):
    """Cuts a Project Gutenberg header (through the '*** START OF ...' line) and footer (from
    the '*** END OF ...' or 'End of (the) Project Gutenberg' line). Text without the markers
    is returned unchanged."""
    text = text.replace("\r\n", "\n")
    start = re.search(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
        # The transcriber credit right after the marker is not part of the book.
        text = re.sub(r"\A\s*Produced by[^\n]*(\n[^\n]*\S[^\n]*)*\n", "", text)
    end = re.search(r"^(\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
                    text, re.M | re.I)
    if end:
        text = text[:end.start()]
    return text


def unescape(text):
    return html.unescape(text)


def require(path, what):
    """Fails with a one-line message when a source file or folder is missing."""
    path = pathlib.Path(path)
    if not path.exists():
        raise CorpusError(f"missing source: {what} ({path}); run scripts/fetch_corpora.sh")
    return path
