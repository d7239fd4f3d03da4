"""Binary parameters bound on the server, for the set-based INSERTs of intake (PostgreSQL with psycopg 3).

Django's PostgreSQL backend binds parameters on the client: psycopg turns every value into SQL text, in Python,
and quotes it. A bulk INSERT goes through ``UNNEST((%s)::type[], ...)``, one array per column, so that is every
element of every column: for a cohort page of 1,000 members some 50,000 values (the requests, their project
links, their audit events), and the text form of a timestamp or a JSON document is the slow one. Inside
``binary_parameters()`` the same statements, with the same values that Django prepared, go to the server as
parameters in binary, dumped by psycopg's C adapters.

Not switched on for the whole connection (``OPTIONS["server_side_binding"]``): the server cannot type every
parameter of the SQL Django generates (a parameter inside a GROUP BY expression, for one). The INSERTs wrapped
here carry nothing but column values, each cast to its column's type (or typed by the column it goes into).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection


@contextmanager
def binary_parameters() -> Iterator[None]:
    """Statements run on the default connection inside this block send their parameters bound, in binary."""
    cursor_class = _binary_cursor_class()
    if cursor_class is None:  # SQLite, or psycopg 2: as Django does it
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    previous = raw.cursor_factory
    raw.cursor_factory = cursor_class
    try:
        yield
    finally:
        raw.cursor_factory = previous


_cursor_class: Any = None


def _binary_cursor_class() -> Any:
    global _cursor_class
    if connection.vendor != "postgresql":
        return None
    if _cursor_class is None:
        from django.db.backends.postgresql import base

        server_binding: Any = getattr(base, "ServerBindingCursor", None)  # psycopg 3 only
        if server_binding is None:
            return None

        class BinaryParametersCursor(server_binding):
            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                if params and isinstance(query, str):
                    # %b asks psycopg for the binary dumper of each value; Django's SQL writes a literal % as %%.
                    query = query.replace("%%", "\0").replace("%s", "%b").replace("\0", "%%")
                return super().execute(query, params, **kwargs)

        _cursor_class = BinaryParametersCursor
    return _cursor_class
