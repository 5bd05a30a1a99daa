"""``python -m statestore``: the same as the ``statestore`` command."""

from statestore.cli import main

if __name__ == "__main__":  # an import's worker processes (spawned) import this module too
    main()
