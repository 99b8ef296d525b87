"""covtl: an open, reproducible study of transfer learning for COVID-19 diagnosis from CT.

Reproduces and tests Liu & Ji 2021 (multi-stage attentive transfer learning) and He et al.
2020 (Self-Trans). The package is thin; its modules follow the papers' sections:
``models`` (networks), and, as the study grows, ``data``, ``losses``, ``ssl``, ``train``,
``metrics``, ``transferability``, ``explain``, ``plotting`` and ``study``.
"""

__version__ = "0.1.0"
