"""Judge a run: sample quality (``evaluate``), novelty of identities (``novelty``) and
careful sampling (``selection``).

``metrics`` contains the maths on feature arrays, ``features`` the three feature extractors
(dlib, EfficientNet-Lite0, Inception-v3), ``realdata`` picks the real faces, ``plots``
draws the novelty pictures and ``commands`` adds the ``evaluate`` and ``novelty``
subcommands.
"""
