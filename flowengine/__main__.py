"""``python -m flowengine``: the command line."""

from flowengine.cli import main

if __name__ == "__main__":
    main()
