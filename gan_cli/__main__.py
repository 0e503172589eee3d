"""`python -m gan_cli ...` is `gan-train ...` (what torchrun launches)."""

from gan_cli.apps.cli import train_main

if __name__ == "__main__":
    train_main()
