"""`python -m partledger_cli` and the `partledger` command: `index` starts without the rest of the CLI."""

import sys


def run() -> None:
    if sys.argv[1:2] == ["index"]:
        from partledger_cli.index import main

        del sys.argv[1]
        main()
    else:
        from partledger_cli.main import main

        main()


if __name__ == "__main__":
    run()
