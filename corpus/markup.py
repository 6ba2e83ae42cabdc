"""Light clean-up of lightweight markup sources into readable plain text: reST (Sphinx
_sources, the kernel's Documentation/), Perl pod, AsciiDoc (git's manual pages) and the
.txt renderings Debian ships. The prose is kept as written; only markup is removed.
"""
import re


def rest_to_text(src):
    """reST: drops comments and directive options, section adornment lines, substitution
    and hyperlink targets; roles and inline markup keep their text."""
    out = []
    lines = src.split("\n")
    skip_indent = None  # inside a comment block: skip lines indented deeper than this
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped == "" or indent > skip_indent:
                continue
            skip_indent = None
        if re.match(r"\.\.\s+(_[^:]+:|\|[^|]+\|\s|\[[^\]]+\])", stripped) or stripped == "..":
            continue  # link target, substitution definition, footnote label
        m = re.match(r"\.\.\s+([\w:-]+)::\s*(.*)$", stripped)
        if m:
            # A directive: keep its argument when it is prose (a title, a note), drop the rest
            if m.group(1) in ("note", "warning", "tip", "important", "attention", "caution",
                              "seealso", "admonition", "topic", "sidebar", "rubric", "deprecated",
                              "versionadded", "versionchanged") and m.group(2):
                out.append(" " * indent + m.group(2))
            continue
        if stripped.startswith(".. "):
            skip_indent = indent  # a comment and its indented continuation
            continue
        if re.match(r"\s*:[\w -]+:(\s|$)", line) and out and out[-1].strip().startswith(".."):
            continue
        if re.fullmatch(r"([=\-~^\"'`#*+_.:<>])\1{2,}", stripped):
            continue  # section over/underline
        if re.match(r"\s+:[\w-]+:(\s|$)", line) and not out[-1:] == [""]:
            continue  # a directive option line (indented :name: value)
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r":[\w:+.-]+:`([^`<]*?)\s*(<[^`>]*>)?`", r"\1", text)  # :role:`text <target>`
    text = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", text)  # `text <url>`_
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"(?<!\w)\*\*(\S.*?\S|\S)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(\S[^*]*?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|(\w[\w -]*)\|", r"\1", text)
    text = re.sub(r"::$", ":", text, flags=re.M)
    return text


POD_CODE = re.compile(r"[A-Z]<<+\s(.*?)\s>>+|[A-Z]<([^<>]*)>", re.S)


def _pod_inline(text):
    # Formatting codes nest (B<I<x>>): strip innermost first until none are left.
    def repl(m):
        inner = m.group(1) if m.group(1) is not None else m.group(2)
        code = m.group(0)[0]
        if code == "L":  # L<text|target> or L<target>
            inner = inner.split("|")[0] if "|" in inner else inner.split("/")[-1].strip('"')
        if code in "XZ":
            return ""
        if code == "E":
            return {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}.get(inner, "")
        return inner
    for _ in range(6):
        new = POD_CODE.sub(repl, text)
        if new == text:
            break
        text = new
    return text


def pod_to_text(src):
    """Perl pod: =head lines become headings, =item keeps its label, other commands and
    =begin/=end and =for blocks go; formatting codes keep their text."""
    out, in_block = [], False
    for para in re.split(r"\n\s*\n", src):
        if para.startswith("="):
            cmd, _, rest = para.partition(" ")
            if cmd == "=begin":
                in_block = True
            elif cmd == "=end":
                in_block = False
            elif cmd.startswith("=head") or cmd == "=item":
                out.append(_pod_inline(rest.strip()))
            elif cmd == "=for":
                pass
            continue
        if not in_block:
            out.append(para if para[:1].isspace() else _pod_inline(para))
    return "\n\n".join(out)


def asciidoc_to_text(src):
    """AsciiDoc (git's .txt manual sources): drops attribute, include, anchor and block
    delimiter lines and macros' brackets; linkgit:git-foo[1] becomes git-foo(1)."""
    out = []
    for line in src.split("\n"):
        s = line.strip()
        if re.fullmatch(r"([-=.+*_/~^])\1{3,}", s) or re.match(r"(include|ifdef|ifndef|endif|ifeval)::", s):
            continue
        if re.fullmatch(r":[\w-]+:.*|\[\[.*\]\]|\[[\w ,=\"'-]*\]|//.*", s):
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"linkgit:([\w.-]+)\[(\d)\]", r"\1(\2)", text)
    text = re.sub(r"\b(?:link|https?):(\S+?)\[([^\]]*)\]", lambda m: m.group(2) or m.group(1), text)
    text = re.sub(r"\{[\w-]+\}", "", text)
    text = text.replace("$$", "")
    text = re.sub(r"``(.*?)''", r'"\1"', text)
    text = re.sub(r"(?<![\w`'])[`'](\S[^`'\n]*?)[`'](?![\w`'])", r"\1", text)
    return text


def fortunes_to_text(src):
    """A fortune file: entries separated by '%' lines become paragraphs."""
    entries = [e.strip("\n") for e in re.split(r"^%\s*$", src, flags=re.M)]
    return "\n\n".join(e for e in entries if e.strip())
