"""Packaging metadata lives in pyproject.toml; this file only ships the LOCKD_PATCH_LOCKUTILS start-up hook.

A ``.pth`` file must sit at the top of site-packages, which no declarative setuptools option can express,
so ``build_py`` copies it next to the packages (regular wheels) or into the editable wheel.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "lockd_lockutils_patch.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / PTH
        targets = [Path(self.build_lib)]
        if getattr(self, "editable_mode", False):
            # An editable wheel is made from the unpacked tree install_lib points at, not from build_lib.
            targets.append(Path(self.get_finalized_command("install").install_lib))
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / PTH)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
