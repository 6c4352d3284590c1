"""Which database role this process connects with (worker_app/db/privileges.py). Apart from the session so that
a worker's start (celery_app.py, schema_check.py) reads it without importing the ORM: a worker that refuses to
start must exit within supervisor's startsecs, however slow its host."""
from __future__ import annotations

from worker_app.settings import get_settings

# None: the owner's URL (migrations, and a process that never said, such as the tests' own). A worker sets it
# from its queues before it forks; the command line from its command.
_duty: str | None = None
_owner_fallback = True
_url: str | None = None  # the URL they resolve to (the settings are read once per process too)


def use_duty(duty: str | None, owner_fallback: bool = True) -> None:
    """Connect as ``duty``'s role from now on (``owner_fallback``: see Settings.database_url_for). Checks at once
    that the host has the credentials, so a worker without them fails at its start, in one line."""
    global _duty, _owner_fallback, _url
    _url = get_settings().database_url_for(duty, owner_fallback)
    _duty, _owner_fallback = duty, owner_fallback


def database_url() -> str:
    """The URL of this process's duty."""
    global _url
    if _url is None:
        _url = get_settings().database_url_for(_duty, _owner_fallback)
    return _url


def current_duty() -> str | None:
    return _duty
