"""`python -m proxy`: the same as the `grantgate` command."""

from proxy.cli import main

if __name__ == "__main__":
    main(prog_name="grantgate")
