"""``python -m multitower`` (and ``torchrun -m multitower``): the command line."""

from multitower.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
