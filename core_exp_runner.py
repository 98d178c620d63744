"""ImmersiveDepth entry point in a checkout: ``python core_exp_runner.py mode=<name> key=value ...``.

The same as the installed ``immersivedepth`` command: both run :func:`modules.cli.main`.
"""

from modules.cli import MODES, main, mode_function, user_error_in  # noqa: F401  (re-exported for callers)

if __name__ == "__main__":
    main()
