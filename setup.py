"""Package discovery for the `matris.*` namespace mapping.

`matris/` is the model package; `train/`, `md/` and `datasets/` are top-level folders
installed as `matris.train`, `matris.md` and `matris.datasets` (a bare `datasets`
would shadow Hugging Face's). Metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {"matris": "matris", "matris.train": "train", "matris.md": "md",
         "matris.datasets": "datasets"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")

setup(packages=packages, package_dir=package_dir)
