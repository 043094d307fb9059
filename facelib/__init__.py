"""facelib: face parsing with models under 1.8M parameters, and the notebooks that regenerate its report."""

__version__ = "0.1.0"
