"""The ``stylequeue`` command. Each subcommand imports its role lazily, so ``submit`` needs no
TensorFlow and ``transfer`` needs no Flask."""
