"""MediaWiki XML dumps (bz2): one plain-text document per main-namespace article.

Wikitext is reduced to its prose: templates, tables, references, comments, files and
categories go; links keep their label; bold/italic quotes and heading marks go.
"""
import bz2
import re
import xml.etree.ElementTree as ET

from .common import unescape


def _strip_nested(text, open_, close):
    """Removes balanced open_ ... close spans ({{templates}}, {| tables |}), nesting allowed."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _strip_file_links(text):
    # [[File:x.jpg|thumb|a caption with [[links]]]]: balanced, so scan for the matching ]].
    out, i = [], 0
    pattern = re.compile(r"\[\[(File|Image|Category|[a-z]{2,3}(-[a-z]+)?):", re.I)
    while True:
        m = pattern.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        i = j


def wikitext_to_text(src):
    s = unescape(src)  # the XML text holds &lt;ref&gt; as entities
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    s = re.sub(r"<ref\b[^>]*/>", "", s)
    s = re.sub(r"<ref\b.*?</ref>", "", s, flags=re.S | re.I)
    s = re.sub(r"<(gallery|math|timeline|score|syntaxhighlight|source)\b.*?</\1>", "", s, flags=re.S | re.I)
    s = _strip_nested(s, "{{", "}}")
    s = _strip_nested(s, "{|", "|}")
    s = _strip_file_links(s)
    s = re.sub(r"\[\[([^\]|]*)\|([^\]]*)\]\]", r"\2", s)
    s = re.sub(r"\[\[([^\]]*)\]\]", r"\1", s)
    s = re.sub(r"\[(?:https?|ftp)://\S+ ([^\]]*)\]", r"\1", s)
    s = re.sub(r"\[(?:https?|ftp)://\S+\]", "", s)
    s = re.sub(r"'{2,}", "", s)
    s = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\n\2\n", s, flags=re.M)
    s = re.sub(r"^[*#:;]+\s*", "", s, flags=re.M)
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"^__\w+__$", "", s, flags=re.M)
    return s


def read_articles(path):
    """[(title, text)] of the main-namespace, non-redirect pages of a .xml.bz2 dump."""
    articles = []
    with bz2.open(path, "rb") as f:
        for _, elem in ET.iterparse(f):
            if not elem.tag.endswith("}page") and elem.tag != "page":
                continue
            fields = {child.tag.split("}")[-1]: child for child in elem}
            title = fields["title"].text or ""
            ns = fields.get("ns")
            text_elem = next((c for c in elem.iter() if c.tag.split("}")[-1] == "text"), None)
            text = (text_elem.text or "") if text_elem is not None else ""
            if (ns is None or ns.text == "0") and ":" not in title and \
                    not re.match(r"\s*#redirect", text, re.I):
                articles.append((title, wikitext_to_text(text)))
            elem.clear()
    return articles
