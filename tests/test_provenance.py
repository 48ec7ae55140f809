"""A run records hybrezoo's own commit, never the commit of another repository that encloses the code
(the runs of shared/checkpoints recorded such a commit)."""
import shutil
import subprocess
import sys
from pathlib import Path

from hybrezoo.engine.provenance import source_commit

REPO = Path(__file__).resolve().parents[1]
ASK = "from hybrezoo.engine.provenance import source_commit; print(source_commit())"


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_the_checkout_records_its_own_head():
    assert source_commit() == git("rev-parse", "HEAD", cwd=REPO)


def test_a_copy_inside_another_repository_records_no_commit(tmp_path):
    outer = tmp_path / "paper-repo"
    (outer / "code").mkdir(parents=True)
    git("init", "-q", cwd=outer)
    (outer / "notes.txt").write_text("someone else's repository")
    git("-c", "user.name=x", "-c", "user.email=x@y", "add", "notes.txt", cwd=outer)
    git("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "-m", "theirs", cwd=outer)
    shutil.copytree(REPO / "hybrezoo", outer / "code" / "hybrezoo", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", ASK], cwd=outer / "code", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "None"   # not the enclosing repository's commit
