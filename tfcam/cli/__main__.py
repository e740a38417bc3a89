"""``python -m tfcam.cli``: the same as the ``tfcam`` command."""

from tfcam.cli import main

main()
