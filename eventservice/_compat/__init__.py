"""Where eventservice relies on more than a dependency's documented API.

One module per dependency, each naming the versions it was tested with; the tests in
``tests/test_compat.py`` fail loudly when an upstream change breaks an assumption.
"""
