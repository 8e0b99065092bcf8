"""facegan: learn from photos of faces and generate new people who are not in them.

The pipeline is ``prepare`` (photos to a dataset), ``train`` (a GAN from one
configuration), ``sample`` (new faces from a run) and ``demo`` (all three).
"""

__version__ = "0.1.0"
