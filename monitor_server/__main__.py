"""`python -m monitor_server` is `fitwatch serve`."""

import sys

from .cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
