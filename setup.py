"""Package layout only (metadata lives in pyproject.toml).

The product fixes the top level as daemon/ models/ export/ (and bench/); they install as
subpackages of `perceptd`, so nothing generic ("models", "export") lands in site-packages.
perceptd/daemon, perceptd/models, perceptd/export and perceptd/bench are committed symlinks to
those folders, so `perceptd.daemon.x` is the plain path perceptd/daemon/x.py: type checkers,
editors and setuptools all resolve it with no import hook.  Subpackages are discovered here
(find_packages follows the links) so a new folder can never be left out of the wheel.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["perceptd", "perceptd.*"]),
    package_data={
        "perceptd.daemon.publish": ["*.json"],
        "perceptd.daemon.console": ["static/*"],
        "perceptd.models": ["data/*.json"],
    },
)
