"""A non-editable install finds dashboard/, slurm_templates/ and modules/ (issue 15, item 6).

The wheel is built from a copy of the checkout and installed into a fresh virtualenv
outside it; the heavy dependencies come from the test environment's site-packages
through a ``.pth`` line (a path entry only: the checkout's editable finder there is not
activated, which the test checks). Then ``mdlma`` runs from a folder outside the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from unified_framework.shipped import SHIPPED

REPO = Path(__file__).resolve().parents[1]


def _tracked(*folders: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *folders],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(name for name in listed if (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to know which files belong to it")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    for name in _tracked("."):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(work),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return next(work.glob("*.whl"))


def test_the_wheel_ships_every_file_of_the_shipped_folders(wheel):
    with zipfile.ZipFile(wheel) as archive:
        data = sorted(
            n.split("/data/share/mdlma/", 1)[1]
            for n in archive.namelist()
            if "/data/share/mdlma/" in n
        )
    assert data == _tracked(*SHIPPED), (
        "add new folders to [tool.setuptools.data-files] in pyproject.toml"
    )


def test_a_wheel_install_works_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "run.py").write_text("print('hi')\n")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MDLMA_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        HOME=str(tmp_path),
        MDLMA_CONFIG=str(tmp_path / "config.toml"),
        PATH=f"{venv / 'bin'}:{env['PATH']}",
    )

    def mdlma(*args: str) -> str:
        done = subprocess.run(
            [str(venv / "bin" / "mdlma"), *args],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import unified_framework.shipped as s; print(s.__file__); "
            "print(s.checkout_root()); print(s.shipped_dir('slurm_templates'))",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert (
        where[0].startswith(str(site)) and where[1] == "None"
    )  # the wheel's copy, not the checkout's
    share = venv / "share" / "mdlma"
    assert where[2] == str(share / "slurm_templates")
    script = mdlma(
        "jobs", "--backend", "local", "render", "python-script", "--set", "script=run.py"
    )
    assert (
        "#SBATCH --cpus-per-task=1\n#SBATCH --mem=2G\n" in script
        and f"python {outside / 'run.py'}" in script
    )
    assert (
        f"mdlma_prefix={tmp_path}\n" in script
    )  # the folder holding the venv, as in scripts/install's layout
    assert "python-script" in mdlma("jobs", "templates")
    assert str(share / "dashboard" / "app.py") in mdlma("dashboard", "--print-command")
    assert mdlma("modules", "list").startswith("mdlma/unified-framework/")
