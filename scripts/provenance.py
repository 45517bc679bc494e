"""Where a result file came from, written at its top by the scripts that write one (`--out`):
the date, the commit (with `-dirty` when the tree had uncommitted changes), and the exact
command line, so that rerunning the command rewrites the whole file, header and all."""
import datetime
import shlex
import subprocess
import sys


def commit():
    """The short commit of the working tree, `-dirty` when it has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def header(title, seconds):
    """A Markdown header: `title`, then when, at which commit, how long, and the command."""
    command = shlex.join([".venv/bin/python", *sys.argv])
    return (f"# {title}\n\nMeasured {datetime.date.today().isoformat()} at {commit()} "
            f"({seconds:.0f} s). Made with:\n\n```\n{command}\n```\n\n")
