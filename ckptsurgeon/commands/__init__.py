"""One module per command: its options, its report (plain data with ``ok``, ``verdict`` and
``to_dict()``) and the function that runs it. :mod:`ckptsurgeon.api` is the facade over these."""
