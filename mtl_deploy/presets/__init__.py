"""Shipped run configurations (`mtl-deploy train --preset NAME`), in the format users write."""
