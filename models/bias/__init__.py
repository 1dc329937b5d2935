"""Bias correction of the coarse toy by a network trained on nudging tendencies (twin experiment).

``twin``: the twin truth (other physics) and the coarse model nudged toward it; ``dataset``:
(state, time-mean nudging tendency) pairs; ``train``: the exported CNN and its manifest;
``evaluate``: the coarse model with and without the correction against the twin truth;
``online``: the correction learned online through the bridge instead (``nudging``: the nudging
files of both).
See ``docs/bias_correction.md``.
"""
