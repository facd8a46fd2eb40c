"""The ``lockd`` command line: one module per subcommand, exit codes in main.py."""
