"""pu-nnunet: stable product-unit residual blocks for nnU-Net v2, as a plugin.

Parts (one folder each): ``product_units`` (the PU layer), ``architectures`` (blocks and
networks), ``trainers`` (nnU-Net trainers), ``datasets`` (converters, synthetic data),
``evaluation`` (metrics, reports, plots), ``inference`` (prediction on new volumes),
``demo`` (the end-to-end main job). ``cli`` is the ``pu-nnunet`` command.
"""

__version__ = "0.1.0"
