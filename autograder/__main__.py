"""Entry point: ``python -m autograder`` (see ``autograder.cli``)."""

import os
import sys

# Kernels are started, capped and stopped with Unix process controls (fcntl, resource,
# signals, fork): say so on Windows instead of failing on an import.
NOT_HERE = (
    "python -m autograder needs Linux or macOS: it controls the notebook's kernel with Unix "
    "process calls. On Windows, run it in WSL (wsl.exe), or run your notebook's test cells "
    "in Jupyter instead: they are the same visible checks."
)

if __name__ == "__main__":
    if os.name == "nt":
        sys.exit(NOT_HERE)
    from autograder.cli import main

    sys.exit(main())
