"""tfcam: transfer learning for image classification with Keras 3, and the heatmaps that show why.

Importing the package sets the Keras backend to TensorFlow (unless the user chose one already) and
imports nothing heavy: TensorFlow is loaded only by the modules that need it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

from tfcam.errors import UserError

__all__ = ["UserError", "__version__"]
