#!/usr/bin/env bash
# Downloads the byte-level data sets into DIR (default data/) and verifies their checksums:
#   tinyshakespeare.txt  1,115,394 bytes  (karpathy/char-rnn)
#   enwik8               100,000,000 bytes (Hutter prize; train/val/test = first 90M / next 5M / last 5M)
# A file already present with the right checksum is kept. SSM_DATA_MIRROR=DIR copies from a local
# directory instead of downloading (for machines without internet). Usage: scripts/get_data.sh [DIR] [NAME...]
set -euo pipefail
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

get() { # get NAME ALGO SUM URL [zip]
    local name=$1 algo=$2 sum=$3 url=$4 zip=${5:-}
    local out="$dir/$name"
    if verify "$out" "$algo" "$sum"; then echo "$out: present, checksum ok"; return; fi
    if [ -n "${SSM_DATA_MIRROR:-}" ] && [ -f "$SSM_DATA_MIRROR/$name" ]; then
        cp "$SSM_DATA_MIRROR/$name" "$out.part"
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

for n in "${names[@]}"; do
    case "$n" in
    tinyshakespeare.txt)
        get tinyshakespeare.txt sha256 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed \
            https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt ;;
    enwik8)
        get enwik8 sha1 57b8363b814821dc9d47aa4d41f58733519076b2 https://mattmahoney.net/dc/enwik8.zip zip ;;
    *) echo "get_data: unknown data set '$n' (tinyshakespeare.txt, enwik8)" >&2; exit 1 ;;
    esac
done
