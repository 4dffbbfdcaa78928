#!/usr/bin/env bash
# Fetches the byte-level data sets into DIR (default data/) and verifies their checksums:
#   tinyshakespeare.txt  1,115,394 bytes   karpathy/char-rnn; the default training set (downloaded)
#   enwik8               100,000,000 bytes Hutter prize: Wikipedia XML (downloaded)
#   linux-docs.txt       31,498,880 bytes  Linux 6.12 Documentation/ *.rst *.txt: English prose with markup,
#                                          the experiments' stand-in for enwik8 (from a mirror: see below)
#   linux-kmf.c          66,194,782 bytes  Linux 6.12 kernel/ mm/ fs/ *.c *.h: the code corpus (from a mirror)
# A file already present with the right checksum is kept. The two Linux corpora are not on the internet as
# files: they come from a local mirror directory holding NAME.xz (as ../shared/data does; its README.md says
# how they were made), given by --mirror DIR or SSM_DATA_MIRROR=DIR. With a mirror, any data set found there
# (NAME or NAME.xz) is taken from it instead of being downloaded.
#
# The three corpora are split as enwik8 traditionally is: the first 90% train, the next 5% validation, the
# last 5% test (boundaries floor(0.90 n) and floor(0.95 n)). Beside NAME this writes
#   NAME.trainval   the first 95%: train + validation, for `ssm train --data` (the experiments pass a
#                   --val-fraction that holds out exactly the validation 5%: experiments/ssmexp/harness.py)
#   NAME.test       the last 5%, for `ssm eval --data` (final numbers are on the test split only)
# (with the extension kept last: linux-docs.trainval.txt, linux-kmf.test.c).
#
# Usage: scripts/get_data.sh [--mirror DIR] [DIR] [NAME...]   (NAME: tinyshakespeare.txt, enwik8, linux-docs,
#        linux-kmf; default tinyshakespeare.txt and enwik8)
set -euo pipefail
mirror=${SSM_DATA_MIRROR:-}
if [ "${1:-}" = "--mirror" ]; then
    [ $# -ge 2 ] || { echo "get_data: --mirror needs a directory" >&2; exit 1; }
    mirror=$2
    shift 2
fi
if [ -n "$mirror" ] && [ ! -d "$mirror" ]; then echo "get_data: mirror $mirror is not a directory" >&2; exit 1; fi
dir=${1:-data}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(tinyshakespeare.txt enwik8)
mkdir -p "$dir"

fetch() { # fetch URL OUT
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$2" "$1"
    elif command -v wget >/dev/null; then wget -q -O "$2" "$1"
    else echo "get_data: need curl or wget to download $1" >&2; return 1; fi
}

verify() { # verify FILE ALGO SUM
    [ -f "$1" ] && [ "$("${2}sum" "$1" | cut -d' ' -f1)" = "$3" ]
}

unxz() { # unxz IN OUT: xz, else Python's lzma
    if command -v xz >/dev/null; then xz -dc "$1" >"$2"
    else python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" "$1" >"$2"; fi
}

get() { # get NAME ALGO SUM URL [zip]   (URL "-": only from a mirror)
    local name=$1 algo=$2 sum=$3 url=$4 zip=${5:-}
    local out="$dir/$name"
    if verify "$out" "$algo" "$sum"; then echo "$out: present, checksum ok"; return; fi
    if [ -n "$mirror" ] && [ -f "$mirror/$name" ]; then
        cp "$mirror/$name" "$out.part"
    elif [ -n "$mirror" ] && [ -f "$mirror/$name.xz" ]; then
        echo "decompressing $mirror/$name.xz"
        if ! unxz "$mirror/$name.xz" "$out.part"; then
            rm -f "$out.part"
            echo "get_data: $mirror/$name.xz does not decompress; nothing was kept" >&2
            return 1
        fi
    elif [ "$url" = "-" ]; then
        echo "get_data: $name is not downloadable: give a mirror directory holding $name.xz" \
            "(--mirror DIR or SSM_DATA_MIRROR=DIR; e.g. ../shared/data)" >&2
        return 1
    elif [ -n "$zip" ]; then
        echo "downloading $url"
        fetch "$url" "$out.zip.part"
        if command -v unzip >/dev/null; then unzip -p "$out.zip.part" "$name" >"$out.part"
        else python3 -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))" \
            "$out.zip.part" "$name" >"$out.part"; fi
        rm -f "$out.zip.part"
    else
        echo "downloading $url"
        fetch "$url" "$out.part"
    fi
    if ! verify "$out.part" "$algo" "$sum"; then
        rm -f "$out.part"
        echo "get_data: $name: checksum mismatch (expected $algo $sum); nothing was kept" >&2
        return 1
    fi
    mv "$out.part" "$out"
    echo "$out: ok ($algo verified)"
}

split_name() { # split_name NAME PART: linux-docs.txt trainval -> linux-docs.trainval.txt; enwik8 -> enwik8.trainval
    case "$1" in
    *.*) echo "${1%.*}.$2.${1##*.}" ;;
    *) echo "$1.$2" ;;
    esac
}

split() { # split NAME: NAME.trainval (first 95%) and NAME.test (last 5%), rewritten unless of the right sizes
    local src="$dir/$1" n cut tv te
    n=$(wc -c <"$src")
    cut=$((n * 95 / 100))
    tv="$dir/$(split_name "$1" trainval)" te="$dir/$(split_name "$1" test)"
    if [ -f "$tv" ] && [ -f "$te" ] && [ "$(wc -c <"$tv")" -eq "$cut" ] && [ "$(wc -c <"$te")" -eq $((n - cut)) ] &&
        [ "$tv" -nt "$src" ] && [ "$te" -nt "$src" ]; then
        echo "$tv, $te: present"
        return
    fi
    head -c "$cut" "$src" >"$tv.part" && mv "$tv.part" "$tv"
    tail -c $((n - cut)) "$src" >"$te.part" && mv "$te.part" "$te"
    echo "$tv: $cut bytes (train $((n * 90 / 100)) + validation $((cut - n * 90 / 100))); $te: $((n - cut)) bytes"
}

for n in "${names[@]}"; do
    case "$n" in
    tinyshakespeare.txt | tinyshakespeare)
        get tinyshakespeare.txt sha256 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed \
            https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt ;;
    enwik8)
        get enwik8 sha1 57b8363b814821dc9d47aa4d41f58733519076b2 https://mattmahoney.net/dc/enwik8.zip zip
        split enwik8 ;;
    linux-docs | linux-docs.txt)
        get linux-docs.txt md5 64eb5a44d167353ae0f1869bafc2289c -
        split linux-docs.txt ;;
    linux-kmf | linux-kmf.c)
        get linux-kmf.c md5 e39c1725fe540e31ca878e66e21ee2db -
        split linux-kmf.c ;;
    *) echo "get_data: unknown data set '$n' (tinyshakespeare.txt, enwik8, linux-docs, linux-kmf)" >&2; exit 1 ;;
    esac
done
