"""``tfcam serve``: an interactive explorer of runs, in the browser and inside TensorBoard.

:mod:`tfcam.serve.runs` reads the runs and computes heatmaps on demand (cached);
:mod:`tfcam.serve.app` is the one WSGI application both homes serve.
"""
