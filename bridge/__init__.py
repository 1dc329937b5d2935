"""mlbridge: couple trained PyTorch closures to legacy Fortran ocean models.

Nothing is imported eagerly: ``import bridge`` is cheap, and each sub-module
(``bridge.config.coupling``, ``bridge.launch.launcher``, ``bridge.server`` ...) is imported
where it is used.
"""

__version__ = "0.1.0"
