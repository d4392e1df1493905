"""``python -m imgq``: the `imgq` command line."""

from imgq.cli import main

if __name__ == "__main__":
    main()
