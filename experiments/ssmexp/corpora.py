"""The corpora and their splits as the experiments read them (scripts/get_data.sh makes the files): train and
validation in one file for `ssm train --val-fraction`, test in another; a held-out slice cut from the training split;
stand-ins for --dry-run."""
from pathlib import Path

from .base import Failed


def split_sizes(n):
    """The corpora's split (scripts/get_data.sh, ../shared/data/README.md): train [0, 0.90 n), validation
    [0.90 n, 0.95 n), test [0.95 n, n), boundaries rounded down."""
    a, b = n * 90 // 100, n * 95 // 100
    return a, b - a, n - b


def val_fraction_for(trainval_len, val_len):
    """The --val-fraction at which `ssm train` holds out exactly the last val_len bytes of a trainval_len file
    (it keeps floor(len * fraction)): halfway between val_len and val_len + 1, far from either."""
    f = (val_len + 0.5) / trainval_len
    assert int(trainval_len * f) == val_len
    return f


class Corpus:
    """A data set split for the experiments: `trainval` (train + validation, for ssm train with `val_fraction`)
    and `test` (for ssm eval)."""

    def __init__(self, name, trainval, test):
        self.name, self.trainval, self.test = name, Path(trainval), Path(test)
        tv, te = self.trainval.stat().st_size, self.test.stat().st_size
        n = tv + te
        train, val, test_len = split_sizes(n)
        if tv != train + val or te != test_len:
            raise Failed(f"{trainval} ({tv} bytes) and {test} ({te}) are not the 95/5 split of {n} bytes: "
                         f"rerun scripts/get_data.sh")
        self.bytes, self.train_bytes, self.val_bytes, self.test_bytes = n, train, val, te
        self.val_fraction = val_fraction_for(tv, val)

    def describe(self):
        return (f"{self.name}: {self.bytes:,} bytes; train {self.train_bytes:,}, validation {self.val_bytes:,}, "
                f"test {self.test_bytes:,}")

    def with_hole(self, out_dir, dry_run=False):
        """This corpus with a slice of its training split held out: HOLE_BYTES (at most a twentieth of the training
        bytes) starting a third of the way in, written to out_dir as NAME.hole.txt, and NAME.trainval-hole.txt
        without it (the same validation bytes at its end). The test split of a path-sorted corpus is the end of its
        file order, unlike the training text (linux-docs': tables of the media API; docs/experiments/hybrid.md);
        the slice is text like the training text that no model saw."""
        return HoleCorpus(self, Path(out_dir), dry_run)


# the held-out slice of Corpus.with_hole (at most a twentieth of the training bytes)


# the held-out slice of Corpus.with_hole (at most a twentieth of the training bytes)
HOLE_BYTES = 1 << 20


class HoleCorpus:
    """Corpus.with_hole's corpus: trainval without the slice, `hole` the slice, `test` and the validation bytes as
    the base corpus's. The files are made once (their sizes checked on reuse)."""

    def __init__(self, base, out_dir, dry_run=False):
        self.name, self.test = base.name, base.test
        self.hole_bytes = min(HOLE_BYTES, getattr(base, "train_bytes", 0) // 20)
        self.hole_at = getattr(base, "train_bytes", 0) // 3
        stem = base.trainval.name.replace(".trainval.txt", "")
        self.trainval, self.hole = out_dir / f"{stem}.trainval-hole.txt", out_dir / f"{stem}.hole.txt"
        if dry_run or isinstance(base, DryCorpus):
            self.val_fraction, self.describe = base.val_fraction, base.describe
            return
        tv_len = base.train_bytes + base.val_bytes - self.hole_bytes
        if not (self.trainval.is_file() and self.trainval.stat().st_size == tv_len and self.hole.is_file()
                and self.hole.stat().st_size == self.hole_bytes):
            data = base.trainval.read_bytes()
            a, b = self.hole_at, self.hole_at + self.hole_bytes
            out_dir.mkdir(parents=True, exist_ok=True)
            self.hole.write_bytes(data[a:b])
            self.trainval.write_bytes(data[:a] + data[b:])
        self.bytes, self.val_bytes, self.test_bytes = base.bytes, base.val_bytes, base.test_bytes
        self.train_bytes = base.train_bytes - self.hole_bytes
        self.val_fraction = val_fraction_for(tv_len, base.val_bytes)
        self._base = base

    def describe(self):
        return (f"{self._base.describe()}; of the training split, {self.hole_bytes:,} bytes from byte "
                f"{self.hole_at:,} held out (the held-out slice), {self.train_bytes:,} trained on")


# the smoke presets' corpus: the first 256 KiB of tinyshakespeare (validation and test 13 KB each: seconds to score)


# the smoke presets' corpus: the first 256 KiB of tinyshakespeare (validation and test 13 KB each: seconds to score)
SMOKE_CORPUS_BYTES = 1 << 18


CORPORA = {  # name -> (file, what get_data.sh calls it)
    "linux-docs": ("linux-docs.txt", "linux-docs"),
    "linux-kmf": ("linux-kmf.c", "linux-kmf"),
    "enwik8": ("enwik8", "enwik8"),
}


def split_name(name, part):
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{part}.{ext}" if dot else f"{name}.{part}"


class DryCorpus:
    """A corpus for --dry-run that need not exist."""

    def __init__(self, name, trainval, test):
        self.name, self.trainval, self.test = name, Path(trainval), Path(test)
        self.val_fraction = 1 / 19

    def describe(self):
        return f"{self.name} (dry run)"

    def with_hole(self, out_dir, dry_run=True):
        return HoleCorpus(self, Path(out_dir), True)
