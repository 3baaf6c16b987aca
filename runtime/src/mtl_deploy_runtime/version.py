"""The library version, recorded in every checkpoint and export manifest. One file holds
it (VERSION, beside this module) for both distributions: mtl-deploy-runtime and
mtl-deploy read it at build time, this module at run time."""

from importlib.resources import files

__version__ = files(__package__).joinpath("VERSION").read_text().strip()
