"""Training data of the subgrid momentum closures, built from the toy model's own runs.

* :mod:`mlbridge_models.subgrid.coarsen`: C-grid coarse-graining, fine -> coarse grid (numpy).
* :mod:`mlbridge_models.subgrid.forcing`: the subgrid momentum forcing from both tendencies.
* :mod:`mlbridge_models.subgrid.dataset`: the resumable dataset writer and its validation.
* ``python -m mlbridge_models.subgrid.make_data``: the command that writes a dataset.

Definitions and sign conventions: ``docs/closures.md``.
"""
