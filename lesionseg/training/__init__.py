"""Training core: transforms, one epoch of training/evaluation, and the fit loop.

Imports neither MLflow nor DVC: progress is reported through :class:`lesionseg.training.fit.Callback`.
"""
