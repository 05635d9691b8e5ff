"""The errors notifier raises on purpose, in one tree (as httpx's `_exceptions.py`):

    NotifierError           what a caller can act on; the message says what to change
    ├── ConfigError         a setting (environment variable) notifier cannot use
    ├── Invalid             an input refused: a partner definition, an event, a replay
    ├── NotFound            no partner, message or dead letter by that id
    ├── Conflict            a change that kept meeting other changes of the same record
    └── ListenError         an address to listen on that cannot be used

The admin API answers Invalid with 400, NotFound with 404 and Conflict with 409; the CLI
prints any of them as one line and exits 1. Anything else is a bug or Redis being away,
handled where it happens.
"""

from __future__ import annotations


class NotifierError(Exception):
    """The base of the errors notifier raises on purpose."""


class ConfigError(NotifierError, ValueError):
    """A setting has a value notifier cannot use; the message names the variable."""


class Invalid(NotifierError, ValueError):
    """An input notifier refuses; the message says what to fix."""


class NotFound(NotifierError, LookupError):
    """Nothing by that id."""


class Conflict(NotifierError):
    """A change that could not be saved because the record kept changing under it."""


class ListenError(NotifierError, OSError):
    """An address to listen on (NOTIFIER_API_ADDR, NOTIFIER_METRICS_ADDR) cannot be used."""
