"""One module per ``enat`` command: HELP, add_arguments(parser), run(args) -> int."""
