"""`python -m warmfed_flwr.data '<run config as JSON>'`: print how many clients the run's data set gives.

The launcher counts clients through this in a short-lived process: counting needs torch and the
data set's index, which the launcher, waiting for the whole run, should not hold all along.
Exits 2 with the DataError's message on stderr when the data set cannot be read.
"""

from __future__ import annotations

import json
import sys

from warmfed_flwr.config import Settings
from warmfed_flwr.data import DataError, num_clients


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    settings = Settings.from_run_config(json.loads(argv[1]))
    try:
        print(num_clients(settings.data))
    except DataError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
