"""``python -m lightning_wd`` is the ``lightning-wd`` command."""

from lightning_wd.apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
