"""The entrypoints: the ``oros`` command, ``oros dev`` and its demo.

They may import every package; nothing imports them (tests/test_layout.py).
"""
