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


def test_a_copy_without_git_records_the_commit_it_was_given(tmp_path):
    """A lent GPU machine receives the checkout without .git: the window script names the commit."""
    import os

    shutil.copytree(REPO / "hybrezoo", tmp_path / "hybrezoo", ignore=shutil.ignore_patterns("__pycache__"))
    head = git("rev-parse", "HEAD", cwd=REPO)

    def ask(value):
        env = {k: v for k, v in os.environ.items() if k != "HYBREZOO_SOURCE_COMMIT"}
        if value is not None:
            env["HYBREZOO_SOURCE_COMMIT"] = value
        done = subprocess.run([sys.executable, "-c", ASK], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert ask(head) == head
    assert ask(None) == "None" and ask("HEAD") == "None" and ask(head[:12]) == "None"   # only a full commit id
    # inside another repository the variable is not believed: that repository's code may differ
    outer = tmp_path / "outer"
    outer.mkdir()
    git("init", "-q", cwd=outer)
    shutil.copytree(REPO / "hybrezoo", outer / "hybrezoo", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, HYBREZOO_SOURCE_COMMIT=head)
    done = subprocess.run([sys.executable, "-c", ASK], cwd=outer, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "None"
