"""Packages of transformer-bench (the rest of the metadata is in pyproject.toml).

The suites (``suites/*.yaml``) and the claims file (``claims/guide.yaml``) ship as package data: in an installed
package they are ``harness/_suites`` and ``harness/_claims`` (``harness.env.data_dir`` finds them); in the tree they
stay where they are, editable, and are read from there."""
from setuptools import find_packages, setup

DATA = {"harness._suites": "suites", "harness._claims": "claims"}

setup(packages=find_packages(include=["harness*", "architectures*"]) + list(DATA),
      package_dir=DATA, package_data={name: ["*.yaml"] for name in DATA})
