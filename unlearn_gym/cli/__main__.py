"""``python -m unlearn_gym.cli``: the ``unlearn-gym`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
