"""``ferrule`` and ``python -m ferrule``: the command line."""

import sys

from ferrule import _ferrule


def main(argv=None):
    try:
        status = _ferrule.main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        status = 0
    sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()
