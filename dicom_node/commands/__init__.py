"""One module per CLI command. Each exposes ``register(subparsers, parent)`` and a ``run(args, config)``.

``register`` adds its sub-parser (with ``parents=[parent]`` so ``--config`` works after the command
name) and calls ``set_defaults(func=run)``. ``run`` returns the exit code: 0 success, 1 failure,
2 bad usage or input.
"""
