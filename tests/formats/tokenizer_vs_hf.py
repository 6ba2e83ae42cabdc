"""subq's tokenizer.json BPE against Hugging Face `tokenizers` (PyPI), on tokenizers trained here.

Usage: python tokenizer_vs_hf.py PATH/TO/subq_tokenize_tool

Trains small byte-level BPE tokenizers with `tokenizers` (GPT-2 style with and without
add_prefix_space, Llama-3 style with its Split regex, ignore_merges and a BOS template, and one
with added tokens that use lstrip/rstrip/single_word/normalized), saves each tokenizer.json,
reloads it with `tokenizers` as the reference, and requires from subq (through the driver):
  - identical ids, with and without special tokens, on varied and random text;
  - identical decodes of those ids and of random id lists (skip_special_tokens true and false);
  - decode(encode(x)) == x, and streaming decode == whole decode.
Exits 1 with the differences listed when anything differs; a missing PyPI package is a failure.
"""

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers,
                            processors, trainers)
except ImportError as e:  # a missing oracle must fail the test, never skip it
    print(f"FAIL: the PyPI package 'tokenizers' is not importable from {sys.executable}: {e}\n"
          "Install the project virtualenv with scripts/setup.sh.")
    sys.exit(1)

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "We'll see; they're sure you've done it, and I'm told he'd agree.",
    "Sub-quadratic attention replaces softmax attention's O(T^2) cost with O(T).",
    "In 1969, 600 million people watched; by 2024 the number was 3,141,592,653.",
    "Tokenizers split text into pieces, then merge bytes by rank until no merge applies.",
    "def encode(text):\n    return [vocab[t] for t in text.split()]\n",
    "if (x != y && z >= 10) { return a[i] + b[j]; } // done",
    "Ünïcödé façade, naïve café, résumé, jalapeño, Straße, Ærøskøbing.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "Γειά σου Κόσμε! Καλημέρα.",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "こんにちは世界。カタカナとひらがな、漢字。",
    "안녕하세요 세계, 반갑습니다.",
    "Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
    "Tabs\tand\ttabs,\nnewlines\r\nand CRLF\r\n, spaces    many     here.",
    "Numbers: 0 12 345 6789 01234 567890 3.14159 -42 1e10 ٣٤٥ ४५६",
    "Punctuation!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "e\u0301 a\u0300 o\u0308 n\u0303 combining marks, and Z\u0351\u0352\u0353algo text.",
    "She said: \"Don't!\" — and left… «quoted» „text“ ‘single’.",
]

# The texts compared: every kind named in the task, special tokens inside text, edge cases.
FIXED_TEXTS = [
    "", " ", "  ", "\n", "\r\n", "\t", "a", "Hello world", " Hello world", "Hello  world ",
    "hello\n\nworld\n", "   leading spaces", "trailing spaces   ", "\t\tindented\n\t\tcode",
    "line one\r\nline two\r\n\r\nline four", "mixed \t \n \r whitespace \u00a0 nbsp",
    "unicode spaces:\u2000\u2001\u2002\u3000\u205f\u202f end", "nel\u0085 and mvs\u180e and zwsp\u200b",
    "I'm, you're, he's, we've, they'll, she'd, it'S, IT'LL, WE'VE, 'ſ",
    "don't can't won't shouldn't y'all o'clock rock'n'roll",
    "12345678901234567890", "1 22 333 4444 55555", "3.14 and 2,718 and 1_000_000",
    "٣٤٥٦٧ and ૧૨૩ digits", "x² y³ ½ ⅓ Ⅻ", "!!!", "?!?!", "...", "---", "a-b_c.d/e\\f",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "😀", "😀😀😀", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "é", "e\u0301", "\u0301\u0301 leading combining",
    "日本語のテキスト", "中文文本没有空格", "한국어 텍스트", "עברית ועוד", "العربية", "ไทย ภาษา",
    "Ελληνικά κείμενο", "кириллица", "\ufeffBOM at start", "\u200d\u200c joiners",
    "<|endoftext|>", "text<|endoftext|>more", "<|endoftext|><|endoftext|>",
    "<|begin_of_text|>Hello<|eot_id|>", "a <|eot_id|> b", "<|start_header_id|>user<|end_header_id|>\n\nhi",
    "<|eot_id", "<|eot_id|", "<<|eot_id|>>", "<mask>", "a <mask> b", "a  <mask>  b", "x<mask>y",
    "[CAT] sat", "the[CAT]", "[CAT][CAT]", " [CAT] ", "subq rocks", "hello world and hello  world",
    "subqsubq", "SUBQ subq Subq",
] + PROSE


def random_texts(rng, n):
    """Random strings over an alphabet that mixes every character class the regexes care about."""
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 +
                list(" " * 20 + "\t\n\r\n'''.,;:!?-_()[]{}<>/\\\"#$%&*+=@^`|~") +
                list("éèêëàâäôöûüçñßøåæœÉÀÇ") + list("日本語中文字한국어") + list("٣٤٥٦") +
                ["\u0301", "\u0308", "\u00a0", "\u3000", "\u2003", "\u0085", "\u180e", "\u200b",
                 "😀", "👍", "🏽", "\u200d", "🇫", "🇷", "ſ", "K", "İ", "ﬁ"] +
                ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "  ", "\r\n", "\n\n"] +
                ["<|endoftext|>", "<|eot_id|>", "<|begin_of_text|>", "<mask>", "[CAT]", "subq",
                 "hello world"])
    texts = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 60])
        texts.append("".join(rng.choice(alphabet) for _ in range(length)))
    return texts


def corpus(rng):
    lines = []
    for _ in range(60):
        lines.extend(PROSE)
    lines.extend(random_texts(rng, 400))
    rng.shuffle(lines)
    return lines


def train_gpt2(lines, vocab_size, add_prefix_space):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok


def train_llama3(lines, vocab_size):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


def with_added_token_flags(tok):
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
    tok.add_tokens([AddedToken("[CAT]", single_word=True), "subq", "hello world"])
    return tok


def build_tokenizers(workdir, rng):
    lines = corpus(rng)
    built = {
        "gpt2_300": train_gpt2(lines, 300, add_prefix_space=False),
        "gpt2_prefix_1000": train_gpt2(lines, 1000, add_prefix_space=True),
        "gpt2_flags_800": with_added_token_flags(train_gpt2(lines, 800, add_prefix_space=False)),
        "llama3_2000": train_llama3(lines, 2000),
        "llama3_600_merges": train_llama3(lines, 600),
    }
    paths = {}
    for name, tok in built.items():
        path = workdir / name / "tokenizer.json"
        path.parent.mkdir(parents=True)
        tok.save(str(path))
        data = json.loads(path.read_text())
        # Llama-3 sets ignore_merges; the second Llama-3 style one keeps the merges path.
        data["model"]["ignore_merges"] = name == "llama3_2000"
        path.write_text(json.dumps(data, ensure_ascii=False))
        paths[name] = path
    return paths


def run_driver(driver, tokenizer_path, texts, id_lists, workdir):
    inp = workdir / "input.json"
    inp.write_text(json.dumps({"texts": texts, "id_lists": id_lists}))
    proc = subprocess.run([driver, str(tokenizer_path), str(inp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"driver failed on {tokenizer_path}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    driver = sys.argv[1]
    rng = random.Random(1234)
    failures = []
    compared = 0
    with tempfile.TemporaryDirectory(prefix="subq_tok_vs_hf_") as tmp:
        workdir = Path(tmp)
        paths = build_tokenizers(workdir, rng)
        texts = FIXED_TEXTS + random_texts(rng, 600)
        for name, path in paths.items():
            ref = Tokenizer.from_file(str(path))
            vocab_size = ref.get_vocab_size(with_added_tokens=True)
            id_lists = [[rng.randrange(vocab_size) for _ in range(rng.randrange(1, 12))]
                        for _ in range(300)]
            out = run_driver(driver, path, texts, id_lists, workdir)
            if out["vocab_size"] != vocab_size:
                failures.append(f"{name}: vocab_size {out['vocab_size']} != HF {vocab_size}")

            def check(what, text, got, want):
                if got != want:
                    failures.append(f"{name}: {what} differs on {text!r}:\n  subq {got!r}\n"
                                    f"  HF   {want!r}")

            for text, res in zip(texts, out["texts"]):
                compared += 1
                want = ref.encode(text, add_special_tokens=False)
                check("ids", text, res["ids"], want.ids)
                if res["ids"] != want.ids:
                    failures[-1] += f"\n  HF tokens {want.tokens!r}"
                check("ids with special tokens", text, res["ids_special"],
                      ref.encode(text, add_special_tokens=True).ids)
                check("decode", text, res["decoded"], ref.decode(want.ids, skip_special_tokens=True))
                check("decode keeping special tokens", text, res["decoded_keep_special"],
                      ref.decode(want.ids, skip_special_tokens=False))
                # add_prefix_space puts a space before each text segment that decode keeps (HF
                # does the same); the other tokenizers must give the text back exactly.
                # lstrip/rstrip take the spaces around <mask> into the token, so those texts
                # cannot come back either.
                if "prefix" not in name and not ("flags" in name and "<mask>" in text):
                    check("decode(encode(x))", text, res["decoded_keep_special"], text)
                check("streamed decode", text, res["streamed"], res["decoded"])
                check("streamed decode keeping special tokens", text, res["streamed_keep_special"],
                      res["decoded_keep_special"])
            for ids, res in zip(id_lists, out["id_lists"]):
                check("decode of ids", ids, res["decoded"], ref.decode(ids, skip_special_tokens=True))
                check("decode of ids keeping special tokens", ids, res["decoded_keep_special"],
                      ref.decode(ids, skip_special_tokens=False))
                check("streamed decode of ids", ids, res["streamed"], res["decoded"])
            print(f"{name}: vocab {vocab_size}, {len(texts)} texts, {len(id_lists)} id lists")

    for f in failures[:40]:
        print(f)
    if failures:
        print(f"FAIL: {len(failures)} differences ({compared} text encodings compared)")
        return 1
    print(f"PASS: {compared} text encodings over {len(paths)} tokenizers identical to HF "
          f"tokenizers {__import__('tokenizers').__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
