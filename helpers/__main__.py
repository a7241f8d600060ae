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
        if rest:
            print(
                "python -m helpers checkpoint takes no arguments: it finds the dense VGG in "
                "LAB_DATA (or downloads it there) and checks that it loads into the course VGG",
                file=sys.stderr,
            )
            return 0 if rest in (["-h"], ["--help"]) else 2
        return _checkpoint()
    if command == "train-dense":
        from helpers.train import train_dense_cli

        return train_dense_cli(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


def _checkpoint() -> int:
    """Find (or download) the dense checkpoint, then load it: a file that is there but broken
    (an error page, a copy cut short, another model) fails here, not in a lab's first cell."""
    from helpers.checkpoints import (
        CheckpointError,
        find_or_download_checkpoint,
        load_dense_state_dict,
    )

    try:
        path = find_or_download_checkpoint()
        state_dict = load_dense_state_dict(path)
    except CheckpointError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"dense checkpoint: {path} (loads into the course VGG: {len(state_dict)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
