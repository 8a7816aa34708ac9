"""
Packaging hook: the wheel carries the built web app.

Everything else about the distribution is in setup.cfg. Building a wheel
copies C{web/dist} (the Vite build) into the package as C{kezchat/web/},
where L{kezchat.http.webapp.packaged_web_dir} finds it, so an installed wheel
serves the UI with no Node at run time. When C{web/dist} is missing the
build runs C{scripts/build-web} first (which needs Node and npm); when it
exists (a Docker stage built it, say) nothing but a copy happens.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_web(build_py):
    def run(self) -> None:
        super().run()
        dist = os.path.join(HERE, "web", "dist")
        if not os.path.isfile(os.path.join(dist, "index.html")):
            script = os.path.join(HERE, "scripts", "build-web")
            if not os.path.isfile(os.path.join(HERE, "web", "package.json")):
                raise SystemExit(
                    "web/dist is missing and the web app's sources are not here to build it: "
                    "build the wheel from a checkout (or an sdist made with web/dist present)"
                )
            subprocess.run(["bash", script], check=True)
        target = os.path.join(self.build_lib, "kezchat", "web")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(dist, target)


setup(cmdclass={"build_py": build_py_with_web})
