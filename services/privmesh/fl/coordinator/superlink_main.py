"""flower-superlink with one fix to Flower's SQLite object store; `SuperLink` starts this in its place.

Flower (1.30) preregisters a message's object tree one object per transaction. Objects are content-addressed,
so a node's reply shares children (an identical config or metrics record) with other messages; when the
ServerApp deletes such a message between two of those transactions, the shared child goes with it, the reply's
next insert fails its foreign key (`FOREIGN KEY constraint failed ... object_children`), the reply is lost and
the round waits for it until its timeout. Preregistering the whole tree in one transaction (Flower's sessions
nest) closes that window. Delete this module when Flower does the same.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from flwr.server.app import run_superlink
from flwr.supercore.object_store.sql_object_store import SqlObjectStore


def preregister_in_one_transaction(preregister: Callable[..., list[str]]) -> Callable[..., list[str]]:
    @functools.wraps(preregister)
    def atomic(store: SqlObjectStore, run_id: int, object_tree: Any) -> list[str]:
        with store.session():
            return preregister(store, run_id, object_tree)
    return atomic


def main() -> None:
    SqlObjectStore.preregister = preregister_in_one_transaction(SqlObjectStore.preregister)  # type: ignore[method-assign]
    sys.argv[0] = "flower-superlink"
    run_superlink()


if __name__ == "__main__":
    main()
