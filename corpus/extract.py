"""Entry point: python -m corpus.extract --packages data/packages --out data/text

Reads every source (corpus/sources.py), applies the split rules (corpus/splits.py), writes
one UTF-8 text file per document and manifest.tsv, and prints the sizes. A missing source
or expected document ends it with one line on stderr and exit status 2.
"""
import argparse
import pathlib
import shutil
import sys
import time

from . import sources, splits
from .common import CorpusError, normalize, tokens, unique_names

SPLITS = ("train", "valid", "heldout-A", "heldout-B")


def doc_path(split, doc):
    if split.startswith("heldout-"):
        return f"heldout/{split[len('heldout-'):]}/{doc.name}.txt"
    return f"{split}/{doc.source}/{doc.name}.txt"


def clean(docs):
    """Normal-form text; documents left empty (an empty fortune file...) are dropped."""
    for d in docs:
        d.text = normalize(d.text)
    return unique_names([d for d in docs if d.text])


def plan(docs, dictionaries):
    """[(split, path, doc)] of every used document, sorted by (split, source, name)."""
    assigned = splits.assign(docs, dictionaries)
    rows = [(assigned[id(d)], d) for d in docs if assigned[id(d)]]
    paths = {}
    for split, d in rows:
        path = doc_path(split, d)
        if path in paths:
            raise CorpusError(f"two documents would be written to {path}")
        paths[path] = d
    return sorted(((s, doc_path(s, d), d) for s, d in rows), key=lambda r: (r[0], r[2].source, r[2].name))


def write(rows, out):
    """Replaces out/ with the documents and manifest.tsv (path relative to out)."""
    out = pathlib.Path(out)
    for sub in ("train", "valid", "heldout"):
        shutil.rmtree(out / sub, ignore_errors=True)
    manifest = ["split\tsource\tdoc\tpath\tbytes"]
    for split, path, d in rows:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = d.text.encode("utf-8")
        target.write_bytes(data)
        manifest.append(f"{split}\t{d.source}\t{d.name}\t{path}\t{len(data)}")
    (out / "manifest.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")


def report(all_docs, rows, dictionaries):
    """Per source and split: documents, bytes, tokens (bytes / 4.2); totals; the pool before caps."""
    lines = ["source                 split        docs        bytes     ~tokens"]
    per = {}
    for split, _, d in rows:
        n, b = per.get((d.source, split), (0, 0))
        per[(d.source, split)] = (n + 1, b + d.bytes)
    for source in sources.SOURCES:
        for split in SPLITS:
            if (source, split) in per:
                n, b = per[(source, split)]
                lines.append(f"{source:22} {split:10} {n:6} {b:12,} {tokens(b):11,.0f}")
    lines.append("")
    for split in SPLITS:
        n = sum(v[0] for (s, sp), v in per.items() if sp == split)
        b = sum(v[1] for (s, sp), v in per.items() if sp == split)
        lines.append(f"{'TOTAL':22} {split:10} {n:6} {b:12,} {tokens(b):11,.0f}")
    prose = sum(d.bytes for d in all_docs if d.source not in dictionaries)
    dicts = sum(d.bytes for d in all_docs if d.source in dictionaries)
    lines.append(f"pool before caps and splits: prose {tokens(prose):,.0f} tokens, "
                 f"dictionaries {tokens(dicts):,.0f} tokens")
    for split, path, d in rows:
        if d.name in ("sotu-2026", "copyright-does-not-exist"):
            lines.append(f"reported separately: {path} {d.bytes:,} bytes, ~{tokens(d.bytes):,.0f} tokens")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", default="data/packages", help="unpacked packages (fetch_corpora.sh)")
    parser.add_argument("--out", default="data/text")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        docs = clean(sources.read_all(args.packages))
        rows = plan(docs, sources.DICTIONARIES)
    except CorpusError as e:
        print(f"corpus: {e}", file=sys.stderr)
        return 2
    write(rows, args.out)
    text = report(docs, rows, sources.DICTIONARIES)
    (pathlib.Path(args.out) / "sizes.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"corpus: wrote {len(rows)} documents to {args.out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
