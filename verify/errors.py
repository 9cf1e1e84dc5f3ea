"""The toolkit's one base error class for problems with the user's input or environment.

It lives in `verify/` because `verify` is the lowest layer (it imports nothing from `migrate`, which imports
it). Every command turns a `ToolError` into one line naming the problem and the remedy, and exit code 2;
anything else escaping a command is a bug in the toolkit.
"""

from __future__ import annotations


class ToolError(Exception):
    """Bad input or environment: the message names the problem and, where there is one, the remedy."""
