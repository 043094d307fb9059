"""facelib: face parsing with models under 1.8M parameters, and the notebooks that regenerate its report."""

__version__ = "0.1.0"

import os as _os
import warnings as _warnings

# albumentations asks the network for a newer version at import; facelib runs on machines without one
# (CI, the GPU machine), where that costs a timeout and a warning per process.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# smp and timm import tqdm.auto, which warns in a notebook kernel without ipywidgets (and names the virtual
# environment's path in the page); facelib draws no widget bars. Set here, before any facelib module imports them.
_warnings.filterwarnings("ignore", message="IProgress not found")
