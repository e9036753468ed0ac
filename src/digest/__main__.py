"""The `digest` command's entry point, kept thin on purpose.

A multiprocessing worker re-imports its parent's main script before its first job: a script
that imported digest.cli made every parser worker load the whole application (about 90 MB,
half a second). From here a worker loads nothing more than the parse stage it runs.
"""


def main() -> None:
    from digest.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
