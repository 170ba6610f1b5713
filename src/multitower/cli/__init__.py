"""The ``multitower`` command line (the only place that parses arguments).

:mod:`~multitower.cli.main` dispatches to one module per command (listed in
``COMMANDS``); :mod:`~multitower.config` loads YAML configs with ``key=value``
overrides and turns them into dataclasses with clear errors.
"""
