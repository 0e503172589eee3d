"""`python -m gan_cli.evaluate ...` is `gan-eval ...`."""

from gan_cli.evaluate.main import main

if __name__ == "__main__":
    main()
