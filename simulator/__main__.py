"""``python -m simulator`` is ``imgq sim``."""

from simulator.cli import sim

if __name__ == "__main__":
    sim()
