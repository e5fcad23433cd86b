"""Package layout only (metadata lives in pyproject.toml).

The product fixes the top level as daemon/ models/ export/; they install as subpackages of
`perceptd`, so nothing generic ("models", "export") lands in site-packages.  Subpackages are
discovered here so a new folder can never be left out of the wheel.
"""

from setuptools import find_packages, setup

ROOTS = {
    "perceptd": "perceptd",
    "perceptd.daemon": "daemon",
    "perceptd.models": "models",
    "perceptd.export": "export",
    "perceptd.bench": "bench",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={"perceptd.daemon.publish": ["*.json"]},
)
