"""The ``shardcorn`` command: click options generated from the settings in ``config``."""
