"""One-line errors for the user, and the entry point wrapper every stage uses."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix: bad params, bad input files, no network.

    The message is one line that names the file or parameter and says what to do.
    """


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a UserError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
