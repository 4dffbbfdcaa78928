"""What every module of the experiments shares: the repository's root, the two ways an experiment stops short
(Skip, Failed), and the log line."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Skip(Exception):
    """The experiment cannot run with this build (an option it needs is missing): written as status "skipped"."""


class Failed(Exception):
    """A command failed; the message names it and its log."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)
