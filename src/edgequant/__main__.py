"""`python -m edgequant` (and `torchrun -m edgequant qat ...`)."""

import os
import sys

# `python -m` puts the current folder first on sys.path: a file there named like a dependency
# (onnxruntime.py, numpy.py) would be imported instead of it. Only a `--task` module the user
# names is imported from their folder (edgequant.task.load_task).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from edgequant.cli import main

main()
