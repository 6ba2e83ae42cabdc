"""HTML to plain text with the standard library's html.parser.

Block elements become line breaks, headings and paragraphs are set off by empty lines,
navigation, scripts, styles and tables of contents are skipped, and <pre> blocks (code) can
be dropped. A multi-page book is read in the order its index page links its pages.
"""
import html.parser
import pathlib
import re
import urllib.parse

from .common import read_text

BLOCK = {"p", "div", "br", "li", "dt", "dd", "tr", "table", "ul", "ol", "dl", "blockquote",
         "section", "article", "header", "footer", "hr", "pre", "h1", "h2", "h3", "h4", "h5",
         "h6", "title", "figcaption", "main"}
PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "dl", "ul", "ol"}
ALWAYS_SKIP = {"script", "style", "head", "nav", "noscript", "svg", "button", "select", "template"}
# Page furniture of DocBook, Sphinx and mdBook output, matched against class and id words.
SKIP_CLASSES = {"navheader", "navfooter", "toc", "sphinxsidebar", "related", "footer",
                "headerlink", "sidebar", "menu-bar", "nav-wrapper", "nav-chapters",
                "breadcrumbs", "mobile-nav-chapters", "search-wrapper", "copyright",
                "legalnotice", "rst-footer-buttons", "indexentry", "docnav", "banner",
                "nav", "hd", "ft", "global-nav", "searchbox"}
VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source",
        "wbr", "param", "track"}


class _TextParser(html.parser.HTMLParser):
    def __init__(self, drop_code, only_main):
        super().__init__(convert_charrefs=True)
        self.drop_code = drop_code
        self.only_main = only_main  # mdBook print.html: the book is inside <main>
        self.parts = []
        self.stack = []  # (tag, skipping) for every open non-void element
        self.skip_depth = 0
        self.main_depth = 0

    def _skipped(self, tag, attrs):
        if tag in ALWAYS_SKIP or (self.drop_code and tag == "pre"):
            return True
        attrs = dict(attrs)
        words = set((attrs.get("class") or "").split()) | {attrs.get("id") or ""}
        return bool(words & SKIP_CLASSES) or attrs.get("role") == "navigation"

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            if tag in ("br", "hr") and not self.skip_depth:
                self.parts.append("\n")
            return
        skipping = self._skipped(tag, attrs)
        self.stack.append((tag, skipping))
        self.skip_depth += skipping
        self.main_depth += tag == "main"
        if tag in BLOCK and not self.skip_depth:
            self.parts.append("\n\n" if tag in PARAGRAPH else "\n")

    def handle_endtag(self, tag):
        if tag in VOID or not any(t == tag for t, _ in self.stack):
            return  # a stray end tag: ignore rather than unbalance the stack
        while self.stack:  # close implicitly ended elements (<p>, <li> without end tags)
            open_tag, skipping = self.stack.pop()
            self.skip_depth -= skipping
            self.main_depth -= open_tag == "main"
            if open_tag == tag:
                break
        if tag in BLOCK and not self.skip_depth:
            self.parts.append("\n\n" if tag in PARAGRAPH else "\n")

    def handle_data(self, data):
        if self.skip_depth or (self.only_main and not self.main_depth):
            return
        if any(t == "pre" for t, _ in self.stack):
            self.parts.append(data)  # code keeps its line breaks and indentation
            return
        data = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            data = data.lstrip()  # source indentation after a block start is not text
        if data:
            self.parts.append(data)

    def text(self):
        s = "".join(self.parts)
        s = re.sub(r"[ \t]+\n", "\n", s)
        return re.sub(r"\n{3,}", "\n\n", s).strip() + "\n"


def html_to_text(markup, drop_code=False, only_main=False):
    parser = _TextParser(drop_code, only_main)
    parser.feed(markup)
    parser.close()
    return parser.text()


def linked_pages(index_path):
    """Local pages an index page links, in first-link order, without the index itself:
    the chapter order of a book split into pages."""
    index_path = pathlib.Path(index_path)
    hrefs = re.findall(r'href\s*=\s*"([^"]+)"', read_text(index_path), flags=re.I)
    pages, seen = [], {index_path.name}
    for href in hrefs:
        parts = urllib.parse.urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        name = urllib.parse.unquote(parts.path)
        if name in seen or not re.search(r"\.html?$", name, re.I) or "/" in name:
            continue
        if (index_path.parent / name).exists():
            seen.add(name)
            pages.append(index_path.parent / name)
    return pages


def book_from_index(index_path, drop_code=False):
    """A multi-page HTML book as one text, chapters in the index page's link order."""
    return "\n\n".join(html_to_text(read_text(p), drop_code) for p in linked_pages(index_path))
