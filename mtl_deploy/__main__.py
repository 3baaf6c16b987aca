"""`python -m mtl_deploy` runs the command line."""

from mtl_deploy.cli import app

app(prog_name="mtl-deploy")
