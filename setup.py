"""Build hook: the wheel carries the repository's conf/ as ficklenet/conf.

Everything else about the package is in pyproject.toml. conf/ stays at the top of
the repository, where users look for it; an installed ficklenet finds it inside the
package (``pkg://ficklenet.conf`` on Hydra's search path, ficklenet.config.conf_dir).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithConf(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "ficklenet" / "conf"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "conf", target, ignore=shutil.ignore_patterns("*.pyc"))
        (target / "__init__.py").write_text('"""ficklenet\'s Hydra configs (package data)."""\n')


setup(cmdclass={"build_py": BuildWithConf})
