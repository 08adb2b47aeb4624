"""``python -m reasoning.cli``: the ``reasoning`` command."""

from reasoning.cli import main

if __name__ == "__main__":
    main()
