"""Command line of the helpers library.

python -m helpers data [--from PATH] [--root DIR]   prepare CIFAR-10 (download or local copy)
python -m helpers checkpoint                        find, download or explain the dense VGG
python -m helpers train-dense [...]                 train the dense VGG (course recipe)
"""

from __future__ import annotations

import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        from helpers.data import cli

        return cli(rest)
    if command == "checkpoint":
        from helpers.checkpoints import CheckpointError, find_or_download_checkpoint

        try:
            print(f"dense checkpoint: {find_or_download_checkpoint()}")
        except CheckpointError as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if command == "train-dense":
        from helpers.train import train_dense_cli

        return train_dense_cli(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
